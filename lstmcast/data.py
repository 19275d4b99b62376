"""CSV -> validated series on a regular time grid.

Every problem a user can fix is a LstmcastError naming the file, the line (1-based, the header
is line 1), the column and what to do. Nothing here writes files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from .errors import LstmcastError

FILL_POLICIES = ("error", "ffill", "interpolate", "zero")
DEFAULT_ID, DEFAULT_TIME, DEFAULT_TARGET = "unique_id", "ds", "y"


@dataclass(frozen=True)
class Columns:
    """How the user's file maps onto (series id, time, value)."""

    id_col: str            # name of the id column in outputs ("unique_id" when the file has none)
    time_col: str
    targets: tuple[str, ...]
    id_in_input: bool      # False: one series per target column (single-series or wide file)

    def to_dict(self) -> dict:
        return {"id_col": self.id_col, "time_col": self.time_col, "targets": list(self.targets),
                "id_in_input": self.id_in_input}

    @classmethod
    def from_dict(cls, d: dict) -> Columns:
        return cls(d["id_col"], d["time_col"], tuple(d["targets"]), bool(d["id_in_input"]))


@dataclass
class SeriesSet:
    """Series on one regular grid: values[i] is float64, one value per step from starts[i]."""

    columns: Columns
    freq: str
    ids: list[str]
    starts: list[pd.Timestamp]
    values: list[np.ndarray]
    # Per series (length, n_covariates) float64, columns in the order of `covariate_names`; None: none.
    covariates: list[np.ndarray] | None = None
    covariate_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.array([len(v) for v in self.values], dtype=np.int64)

    def last_time(self, i: int) -> pd.Timestamp:
        return self.starts[i] + (len(self.values[i]) - 1) * to_offset(self.freq)

    def future_times(self, i: int, steps: int) -> pd.DatetimeIndex:
        return pd.date_range(self.last_time(i), periods=steps + 1, freq=self.freq)[1:]

    def head(self, drop_last: int) -> SeriesSet:
        """The same series without their last `drop_last` points (for hold-out evaluation)."""
        covariates = (None if self.covariates is None else
                      [c[: len(c) - drop_last] for c in self.covariates])
        return SeriesSet(self.columns, self.freq, list(self.ids), list(self.starts),
                         [v[: len(v) - drop_last] for v in self.values], covariates, self.covariate_names)

    def subset(self, index: list[int]) -> SeriesSet:
        """Series `index` only, in that order."""
        covariates = None if self.covariates is None else [self.covariates[i] for i in index]
        return SeriesSet(self.columns, self.freq, [self.ids[i] for i in index],
                         [self.starts[i] for i in index], [self.values[i] for i in index],
                         covariates, self.covariate_names)


def _line(index: int) -> int:
    """DataFrame row index -> 1-based line number in the file (line 1 is the header)."""
    return int(index) + 2


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise LstmcastError(f"{path}: file not found")
    if not path.is_file():
        raise LstmcastError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise LstmcastError(f"{path}: file is empty; expected a CSV with a header row")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise LstmcastError(f"{path}: file is empty; expected a CSV with a header row") from None
    except pd.errors.ParserError as exc:
        raise LstmcastError(f"{path}: not a readable CSV ({str(exc).strip()})") from None
    except UnicodeDecodeError:
        raise LstmcastError(f"{path}: not a text CSV file (encoding is not UTF-8)") from None
    if frame.empty:
        raise LstmcastError(f"{path}: no data rows below the header")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _require(path: Path, frame: pd.DataFrame, name: str, option: str | None) -> None:
    """`option` is the flag that names this column, or None when a trained run fixed it."""
    if name not in frame.columns:
        todo = (f"pass {option} with one of them" if option else
                "the run was trained on that column, so the data needs it too")
        raise LstmcastError(f"{path}: column '{name}' not found (columns: {', '.join(frame.columns)}); "
                            f"{todo}")


def _looks_like_time(column: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    if not (pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)):
        return False
    sample = column.dropna().astype(str).head(20)
    if sample.empty:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().all())


def resolve_columns(path: Path, frame: pd.DataFrame, id_col: str | None, time_col: str | None,
                    target: list[str] | None, trained: bool = False, covariates: tuple[str, ...] = ()
                    ) -> Columns:
    """Pick the id, time and target columns: explicit names, then defaults, then detection.

    `trained`: the names come from a trained run, not from the user's options. `covariates` are
    never detected as the target.
    """
    def require(name: str, option: str) -> None:
        _require(path, frame, name, None if trained else option)

    if id_col is not None:
        require(id_col, "--id-col")
    elif DEFAULT_ID in frame.columns and not (target and len(target) > 1):
        id_col = DEFAULT_ID
    for name in target or []:
        require(name, "--target")
    taken = {id_col, *(target or [])}

    if time_col is not None:
        require(time_col, "--time-col")
    elif DEFAULT_TIME in frame.columns:
        time_col = DEFAULT_TIME
    else:
        found = [c for c in frame.columns if c not in taken and _looks_like_time(frame[c])]
        if not found:
            raise LstmcastError(f"{path}: no timestamp column found (columns: "
                                f"{', '.join(frame.columns)}); pass --time-col")
        if len(found) > 1:
            raise LstmcastError(f"{path}: several timestamp-like columns ({', '.join(found)}); "
                                f"pass --time-col with one of them")
        time_col = found[0]

    if not target:
        if DEFAULT_TARGET in frame.columns and DEFAULT_TARGET not in (id_col, time_col):
            target = [DEFAULT_TARGET]
        else:
            numeric = [c for c in frame.columns if c not in (id_col, time_col, *covariates)
                       and pd.api.types.is_numeric_dtype(frame[c])]
            if not numeric:
                raise LstmcastError(f"{path}: no numeric value column found; pass --target")
            if len(numeric) > 1:
                raise LstmcastError(f"{path}: several numeric columns ({', '.join(numeric)}); "
                                    f"pass --target with one (long file) or a comma list (wide file)")
            target = numeric
    if len(target) > 1 and id_col is not None:
        raise LstmcastError(f"{path}: --target with several columns makes each column a series "
                            f"(wide file), which cannot be combined with the id column '{id_col}'")
    if time_col in target or (id_col is not None and (id_col == time_col or id_col in target)):
        raise LstmcastError(f"{path}: the id, time and target columns must be different columns")
    return Columns(id_col or DEFAULT_ID, time_col, tuple(target), id_col is not None)


def _parse_times(path: Path, frame: pd.DataFrame, time_col: str) -> pd.Series:
    raw = frame[time_col]
    empty = raw.isna()
    if empty.any():
        raise LstmcastError(f"{path} line {_line(raw.index[empty][0])}, column '{time_col}': "
                            f"empty timestamp; every row needs one")
    if pd.api.types.is_numeric_dtype(raw):
        raise LstmcastError(f"{path}, column '{time_col}': holds numbers, not timestamps; write dates "
                            f"such as 2024-01-31 (a year 2024 as 2024-01-01), or pass --time-col")
    try:
        with warnings.catch_warnings():  # "could not infer format" would add lines to stderr
            warnings.simplefilter("ignore")
            times = pd.to_datetime(raw, errors="coerce")
            if times.isna().any():  # one format per file is the norm; allow ISO variants too
                times = pd.to_datetime(raw, errors="coerce", format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise LstmcastError(f"{path}, column '{time_col}': cannot read timestamps ({exc}); "
                            f"use one format and one time zone") from None
    bad = times.isna()
    if bad.any():
        row = raw.index[bad][0]
        raise LstmcastError(f"{path} line {_line(row)}, column '{time_col}': cannot parse "
                            f"{str(raw[row])!r} as a timestamp; use e.g. 2024-01-31 or 2024-01-31 13:00")
    return times


def _parse_values(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    raw = frame[column]
    values = raw if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw, errors="coerce")
    text = raw.astype(str).str.strip()
    bad = (values.isna() & raw.notna() & (text != "")) | np.isinf(values.astype(float))
    if bad.any():
        row = raw.index[bad][0]
        raise LstmcastError(f"{path} line {_line(row)}, column '{column}': {str(raw[row])!r} is not "
                            f"a finite number; fix the value or leave the cell empty")
    if pd.api.types.is_bool_dtype(values):
        raise LstmcastError(f"{path}, column '{column}': holds true/false values, not numbers")
    return values.astype(float)


def _parse_covariate(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A covariate column: a finite number in every row (it is read at every step)."""
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        raise LstmcastError(f"{path}, column '{column}': holds true/false values; write covariates as 0/1")
    values = raw if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw, errors="coerce")
    bad = values.isna() | np.isinf(values.astype(float))
    if bad.any():
        row = raw.index[bad][0]
        what = "is empty" if pd.isna(raw[row]) or str(raw[row]).strip() == "" else \
            f"{str(raw[row])!r} is not a finite number"
        raise LstmcastError(f"{path} line {_line(row)}, column '{column}': {what}; a covariate needs a "
                            f"finite number in every row")
    return values.to_numpy(dtype=np.float64)


def check_covariates(path: Path, frame: pd.DataFrame, columns: Columns, names: tuple[str, ...],
                     trained: bool) -> None:
    """Every covariate is a column of the file and not the id, time or a target column."""
    for name in names:
        _require(path, frame, name, None if trained else "--past-covariates / --future-covariates")
        role = ("time" if name == columns.time_col else "target" if name in columns.targets else
                "id" if columns.id_in_input and name == columns.id_col else None)
        if role:
            raise LstmcastError(f"{path}: covariate '{name}' is the {role} column; a covariate must be "
                                f"another column")


def _long_table(path: Path, frame: pd.DataFrame, columns: Columns,
                covariates: tuple[str, ...] = ()) -> pd.DataFrame:
    """(id, time, value, line, covariates...) rows, one per observation, in file order."""
    times = _parse_times(path, frame, columns.time_col)
    shared = {name: _parse_covariate(path, frame, name) for name in covariates}
    parts = []
    for target in columns.targets:
        if columns.id_in_input:
            ids = frame[columns.id_col].astype(str).str.strip()
            missing = frame[columns.id_col].isna()
            if missing.any():
                raise LstmcastError(f"{path} line {_line(frame.index[missing][0])}, column "
                                    f"'{columns.id_col}': empty series id; every row needs one")
        else:
            ids = pd.Series(target, index=frame.index)
        parts.append(pd.DataFrame({"id": ids, "time": times,
                                   "value": _parse_values(path, frame, target),
                                   "line": frame.index.to_numpy() + 2,
                                   **{f"cov:{k}": v for k, v in shared.items()}}))
    table = pd.concat(parts, ignore_index=True)
    dup = table.duplicated(["id", "time"], keep=False)
    if dup.any():
        rows = table[dup].sort_values(["id", "time", "line"])
        first, second = rows.iloc[0], rows.iloc[1]
        raise LstmcastError(f"{path} line {second['line']}: duplicate row for series "
                            f"'{second['id']}' at {second['time']} (first at line {first['line']}); "
                            f"keep one row per series and timestamp")
    return table


_CALENDAR = ["MS", "ME", "QS-JAN", "QS-FEB", "QS-MAR", "QE-JAN", "QE-FEB", "QE-MAR",
             "YS", "YE", "W-SUN", "W-MON", "W-TUE", "W-WED", "W-THU", "W-FRI", "W-SAT", "B"]


def _on_grid(times: pd.DatetimeIndex, freq: str) -> bool:
    grid = pd.date_range(times[0], times[-1], freq=freq)
    return len(grid) > 0 and grid[0] == times[0] and bool(times.isin(grid).all())


def _freq_name(freq: str) -> str:
    return to_offset(freq).freqstr


def _step_alias(step: pd.Timedelta, first: pd.Timestamp) -> str:
    """The alias infer_freq would give a gap-free series with this step: 'D', 'W-MON', '2h'."""
    day = pd.Timedelta(days=1)
    if step % day == pd.Timedelta(0):
        days = step // day
        if days == 7:
            return f"W-{first.day_name()[:3].upper()}"
        return "D" if days == 1 else f"{days}D"
    return _freq_name(to_offset(step))


def same_frequency(a: str, b: str) -> bool:
    return to_offset(a) == to_offset(b)


def infer_frequency(path: Path, groups: dict[str, pd.DatetimeIndex], expected: str | None) -> str:
    """One frequency for the whole file, checked against every series.

    Series long enough and without gaps name their own frequency; they must all agree. The
    others (short, or with gaps) must sit on that grid. `expected` (the trained frequency at
    predict time) must match what the file shows.
    """
    inferred: dict[str, str] = {}
    for sid, times in groups.items():
        if len(times) >= 3:
            with warnings.catch_warnings():  # pandas 3 warns that infer_freq's type will change
                warnings.simplefilter("ignore")
                freq = pd.infer_freq(times)
            if freq is not None:
                inferred[sid] = _freq_name(freq)
    distinct = list(dict.fromkeys(inferred.values()))
    if len(distinct) > 1:
        a = next(s for s, f in inferred.items() if f == distinct[0])
        b = next(s for s, f in inferred.items() if f == distinct[1])
        raise LstmcastError(f"{path}: mixed frequencies: series '{a}' is '{distinct[0]}' but series "
                            f"'{b}' is '{distinct[1]}'; put series of one frequency in one file")
    if expected is not None:
        candidates = [_freq_name(expected)]
        if distinct and not same_frequency(distinct[0], candidates[0]):
            raise LstmcastError(f"{path}: the data has frequency '{distinct[0]}' but the model was "
                                f"trained on '{candidates[0]}' data; use data of the trained frequency")
    elif distinct:
        candidates = distinct
    else:
        diffs = [t[1:] - t[:-1] for t in groups.values() if len(t) > 1]
        if not diffs:
            raise LstmcastError(f"{path}: every series has a single timestamp, so the frequency "
                                f"cannot be inferred; give each series at least 3 rows")
        step = min(d.min() for d in diffs)
        first = next(iter(groups.values()))[0]
        candidates = [_step_alias(step, first)] + _CALENDAR
    for freq in candidates:
        if all(_on_grid(times, freq) for times in groups.values()):
            return freq
    sid, times = next((s, t) for s, t in groups.items() if not _on_grid(t, candidates[0]))
    raise LstmcastError(f"{path}: series '{sid}' has timestamps off the '{candidates[0]}' grid "
                        f"(from {times[0]}); the rows need one regular frequency")


def _regularise(path: Path, table: pd.DataFrame, freq: str, fill: str, covariates: tuple[str, ...] = ()
                ) -> tuple[list[str], list[pd.Timestamp], list[np.ndarray], list[np.ndarray]]:
    """Series on the grid; covariates at missing timestamps are filled like the values (zero:
    carried forward, as a covariate of 0 may mean something)."""
    ids, starts, values, extra = [], [], [], []
    cov_columns = [f"cov:{k}" for k in covariates]
    gaps = empties = 0
    first_problem = None
    for sid, rows in table.groupby("id", sort=False):
        rows = rows.sort_values("time")
        grid = pd.date_range(rows["time"].iloc[0], rows["time"].iloc[-1], freq=freq)
        series = pd.Series(rows["value"].to_numpy(), index=pd.DatetimeIndex(rows["time"]))
        series = series.reindex(grid)
        missing = series.isna()
        if missing.all():
            raise LstmcastError(f"{path}: series '{sid}' has no values; remove it or fill it in")
        n_gaps = len(grid) - len(rows)
        gaps += n_gaps
        empties += int(missing.sum()) - n_gaps
        if missing.any() and first_problem is None:
            first_problem = f"series '{sid}' at {grid[missing.to_numpy()][0]}"
        if fill == "ffill":
            series = series.ffill().bfill()
        elif fill == "interpolate":
            series = series.interpolate(limit_direction="both")
        elif fill == "zero":
            series = series.fillna(0.0)
        ids.append(str(sid))
        starts.append(grid[0])
        values.append(series.to_numpy(dtype=np.float64))
        if cov_columns:
            cov = pd.DataFrame(rows[cov_columns].to_numpy(), index=pd.DatetimeIndex(rows["time"])).reindex(grid)
            cov = cov.interpolate(limit_direction="both") if fill == "interpolate" else cov.ffill().bfill()
            extra.append(cov.to_numpy(dtype=np.float64))
    if fill == "error" and (gaps or empties):
        raise LstmcastError(f"{path}: {gaps} missing timestamps and {empties} empty values "
                            f"(first: {first_problem}); choose a policy with "
                            f"--set data.fill=ffill|interpolate|zero")
    return ids, starts, values, extra


def read_series(path: str | Path, *, id_col: str | None = None, time_col: str | None = None,
                target: list[str] | None = None, fill: str = "error",
                expected_freq: str | None = None, covariates: list[str] | None = None) -> SeriesSet:
    """Read and validate a long or wide CSV into a SeriesSet (see the README's CSV contract).

    `expected_freq` is set when reading for a trained run: the columns and frequency are fixed.
    `covariates`: numeric columns read per row (in a wide file shared by every series).
    """
    path = Path(path)
    frame = _read_frame(path)
    names = tuple(covariates or ())
    trained = expected_freq is not None
    columns = resolve_columns(path, frame, id_col, time_col, list(target) if target else None,
                              trained=trained, covariates=names)
    check_covariates(path, frame, columns, names, trained)
    table = _long_table(path, frame, columns, names)
    groups = {sid: pd.DatetimeIndex(rows["time"]).sort_values()
              for sid, rows in table.groupby("id", sort=False)}
    freq = infer_frequency(path, groups, expected_freq)
    ids, starts, values, extra = _regularise(path, table, freq, fill, names)
    return SeriesSet(columns, freq, ids, starts, values, extra if names else None, names)


def read_future(path: str | Path, series: SeriesSet, names: tuple[str, ...], steps: int) -> np.ndarray:
    """(n_series, steps, len(names)) future covariates from a --future CSV: a row per series
    (id column, unless the run's file was wide: then rows are shared) and forecast timestamp."""
    path = Path(path)
    frame = _read_frame(path)
    cols = series.columns
    for name in ([cols.id_col] if cols.id_in_input else []) + [cols.time_col, *names]:
        _require(path, frame, name, None)
    times = _parse_times(path, frame, cols.time_col)
    ids = frame[cols.id_col].astype(str).str.strip() if cols.id_in_input else pd.Series("", index=frame.index)
    # One time unit on both sides of the merge (parsed timestamps may be in s, ms or us).
    table = pd.DataFrame({"id": ids.to_numpy(), "time": pd.DatetimeIndex(times).as_unit("ns"),
                          "row": np.arange(len(frame))})
    dup = table.duplicated(["id", "time"], keep="first")
    if dup.any():
        row = int(table["row"][dup].iloc[0])
        raise LstmcastError(f"{path} line {_line(row)}: duplicate row for series '{table['id'][row]}' at "
                            f"{table['time'][row]}; keep one row per series and timestamp")
    need_ids = np.repeat(np.array(series.ids if cols.id_in_input else [""] * len(series), dtype=object), steps)
    need_times = pd.DatetimeIndex(np.concatenate([series.future_times(i, steps).as_unit("ns")
                                                  for i in range(len(series))])).as_unit("ns")
    need = pd.DataFrame({"id": need_ids, "time": need_times})
    found = need.merge(table, on=["id", "time"], how="left")["row"]
    missing = found.isna().to_numpy()
    if missing.any():
        where = [f"series '{series.ids[k // steps]}' at {need_times[k]}"
                 for k in np.flatnonzero(missing)[:3]]
        more = f" and {missing.sum() - 3} more" if missing.sum() > 3 else ""
        raise LstmcastError(f"{path}: {missing.sum()} of the {len(need)} needed rows are missing "
                            f"({'; '.join(where)}{more}); the file needs {', '.join(names)} for each of the "
                            f"next {steps} steps of every series")
    rows = found.to_numpy(dtype=np.int64)
    used = frame.iloc[np.unique(rows)]
    values = np.stack([pd.Series(_parse_covariate(path, used, name), index=used.index).reindex(frame.index[rows])
                       .to_numpy() for name in names], axis=-1)
    return values.reshape(len(series), steps, len(names))
