"""CSV -> validated series on a regular time grid.

Every problem a user can fix is a LstmcastError naming the file, the line (1-based, the header
is line 1), the column and what to do. Nothing here writes files.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import timegrid
from .config import FILL_POLICIES  # noqa: F401  (data.fill's values, declared with the key)
from .errors import LstmcastError

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
    """Series on one regular grid: values[i] is float64, one value per step from starts[i].

    `freq` names a timegrid frequency (D, B, W-WED, MS, MS@15, QE-DEC, h, ...). Times with several
    UTC offsets (daylight saving time) are held in UTC; `zone` is then the offset forecasts are
    written with (that of the file's latest timestamp); None: times are written as read.
    """

    columns: Columns
    freq: str
    ids: list[str]
    starts: list[pd.Timestamp]
    values: list[np.ndarray]
    # Per series (length, n_covariates) float64, columns in the order of `covariate_names`; None: none.
    covariates: list[np.ndarray] | None = None
    covariate_names: tuple[str, ...] = ()
    zone: object = None
    dayfirst: bool | None = None   # how 01/02/2021-style dates were read (None: not written so)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def grid(self) -> timegrid.Freq:
        return timegrid.parse_freq(self.freq)

    def lengths(self) -> np.ndarray:
        return np.array([len(v) for v in self.values], dtype=np.int64)

    def last_times(self) -> pd.DatetimeIndex:
        """(n,) each series' last timestamp."""
        return timegrid.shift(self.grid, pd.DatetimeIndex(self.starts), self.lengths() - 1)

    def last_time(self, i: int) -> pd.Timestamp:
        return timegrid.shift(self.grid, pd.DatetimeIndex([self.starts[i]]), [len(self.values[i]) - 1])[0]

    def times(self) -> pd.DatetimeIndex:
        """Every series' timestamps, series after series."""
        return timegrid.series_times(self.grid, pd.DatetimeIndex(self.starts), self.lengths())

    def all_future_times(self, steps: int) -> pd.DatetimeIndex:
        """(n * steps,) the next `steps` grid times of every series, series after series, in the
        zone forecasts are written with."""
        times = timegrid.future_times(self.grid, self.last_times(), steps)
        return times.tz_convert(self.zone) if self.zone is not None else times

    def future_times(self, i: int, steps: int) -> pd.DatetimeIndex:
        times = timegrid.future_times(self.grid, pd.DatetimeIndex([self.last_time(i)]), steps)
        return times.tz_convert(self.zone) if self.zone is not None else times

    def head(self, drop_last: int) -> SeriesSet:
        """The same series without their last `drop_last` points (for hold-out evaluation)."""
        covariates = (None if self.covariates is None else
                      [c[: len(c) - drop_last] for c in self.covariates])
        return SeriesSet(self.columns, self.freq, list(self.ids), list(self.starts),
                         [v[: len(v) - drop_last] for v in self.values], covariates, self.covariate_names,
                         self.zone, self.dayfirst)

    def subset(self, index: list[int]) -> SeriesSet:
        """Series `index` only, in that order."""
        covariates = None if self.covariates is None else [self.covariates[i] for i in index]
        return SeriesSet(self.columns, self.freq, [self.ids[i] for i in index],
                         [self.starts[i] for i in index], [self.values[i] for i in index],
                         covariates, self.covariate_names, self.zone, self.dayfirst)


def _line(index: int) -> int:
    """DataFrame row index -> 1-based line number in the file (line 1 is the header)."""
    return int(index) + 2


# Cells read as "no value" in value and covariate columns (pandas' defaults); ids stay text.
NA_TEXT = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                     "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
_DELIMITERS = (",", ";", "\t", "|")


@dataclass
class Table:
    """A CSV as read: numbers as numbers, the `text` columns (ids) as written, every other cell
    in NA_TEXT missing. `skipped`: lines above the header (Excel's `sep=`); the index starts
    there, so _line(index) stays the file's line number."""

    frame: pd.DataFrame
    skipped: int = 0


def _dialect(path: Path) -> tuple[str, int]:
    """(delimiter, lines to skip): Excel's `sep=;` first line names it; else the header's most
    frequent delimiter among , ; tab |."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
    if first.strip().lower().startswith("sep=") and len(first.strip()) == 5:
        return first.strip()[4], 1
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return (best if counts[best] else ","), 0


def _read_table(path: Path, text: tuple[str, ...] = ()) -> Table:
    """Read a CSV; the columns named in `text` (the id column) are kept as text, byte for byte."""
    if not path.exists():
        raise LstmcastError(f"{path}: file not found")
    if not path.is_file():
        raise LstmcastError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise LstmcastError(f"{path}: file is empty; expected a CSV with a header row")
    try:
        sep, skip = _dialect(path)
        with open(path, encoding="utf-8-sig", newline="") as handle:
            lines = iter(handle)
            for _ in range(skip):
                next(lines, None)
            names = [c.strip() for c in next(csv.reader(lines, delimiter=sep), [])]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise LstmcastError(f"{path} line {skip + 1}: column name {', '.join(repr(n) for n in twice)} "
                                f"appears more than once; give every column its own name")
        as_text = [n for n in names if n in text]
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # DtypeWarning, overflow
            warnings.simplefilter("ignore")
            frame = pd.read_csv(path, sep=sep, skiprows=skip + 1, header=None, names=names,
                                dtype={n: str for n in as_text}, keep_default_na=False,
                                na_values={n: sorted(NA_TEXT) for n in names if n not in as_text},
                                skipinitialspace=True, encoding="utf-8-sig", low_memory=False,
                                index_col=False)
    except pd.errors.EmptyDataError:
        raise LstmcastError(f"{path}: file is empty; expected a CSV with a header row") from None
    except pd.errors.ParserError as exc:
        raise LstmcastError(f"{path}: not a readable CSV ({str(exc).strip()})") from None
    except UnicodeDecodeError:
        raise LstmcastError(f"{path}: not a text CSV file (encoding is not UTF-8)") from None
    if not names:
        raise LstmcastError(f"{path}: file is empty; expected a CSV with a header row")
    if frame.empty:
        raise LstmcastError(f"{path}: no data rows below the header")
    frame.index = pd.RangeIndex(skip, skip + len(frame))  # so that _line(index) is the file's line
    for name in frame.columns:  # text columns: surrounding blanks removed (per distinct value)
        if name in as_text or frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name]):
            codes, uniques = pd.factorize(frame[name], use_na_sentinel=True)
            stripped = pd.Index(uniques.astype(str)).str.strip()
            if not stripped.equals(pd.Index(uniques.astype(str))):
                frame[name] = pd.Series(np.asarray(stripped, dtype=object)[codes], index=frame.index).where(codes >= 0)
    return Table(frame, skip)




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


_DMY = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?=$|[ T])(.*)$")
_OFFSET = re.compile(r"\d:\d{2}(?::\d{2}(?:\.\d*)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)$")


def _reorder_dmy(path: Path, raw: pd.Series, time_col: str, dayfirst: bool | None
                 ) -> tuple[pd.Series | None, bool | None]:
    """(ISO text, dayfirst) for day/month/year-style text (01/02/2021, 1.2.21 13:00) in the right
    order; (None, None) when the column is not written that way. Never guesses: when both orders read every
    row and no number above 12 tells them apart, `data.dayfirst` must say."""
    parts = raw.str.extract(_DMY)
    if parts[0].isna().any():
        return None, None
    a, b = parts[0].astype(int), parts[2].astype(int)
    if dayfirst is None:
        if (a > 12).any() and not (b > 12).any():
            dayfirst = True
        elif (b > 12).any() and not (a > 12).any():
            dayfirst = False
        elif (a == b).all():
            dayfirst = True
        elif not (a > 12).any():
            row = raw.index[(a != b).to_numpy()][0]
            raise LstmcastError(f"{path} line {_line(row)}, column '{time_col}': {raw[row]!r} reads as "
                                f"day/month and as month/day and no date in the file tells which; set "
                                f"--set data.dayfirst=true (or false), or write dates as 2021-02-01")
    day, month = (a, b) if dayfirst else (b, a)
    year = parts[3].astype(int)
    year = year.where(parts[3].str.len() == 4, np.where(year < 69, 2000 + year, 1900 + year))
    return (year.astype(str).str.zfill(4) + "-" + month.astype(str).str.zfill(2) + "-"
            + day.astype(str).str.zfill(2) + parts[4]), dayfirst


def _parse_times(path: Path, frame: pd.DataFrame, time_col: str, dayfirst: bool | None = None
                 ) -> tuple[pd.Series, object, bool | None]:
    """(timestamps, zone, dayfirst as decided for d/m/y text, else None). Timestamps are naive,
    or all carry a UTC offset. One offset: kept (a fixed zone; zone None). Several (daylight saving
    time): converted to UTC and zone is the offset of the latest timestamp, the one forecasts are
    written with; daily or coarser data at one local time of day stays on the local calendar."""
    column = frame[time_col]
    codes, uniques = pd.factorize(column)  # parse each distinct timestamp text once
    if (codes < 0).any():
        raise LstmcastError(f"{path} line {_line(column.index[codes < 0][0])}, column '{time_col}': "
                            f"empty timestamp; every row needs one")
    if pd.api.types.is_numeric_dtype(column):
        raise LstmcastError(f"{path}, column '{time_col}': holds numbers, not timestamps; write dates "
                            f"such as 2024-01-31 (a year 2024 as 2024-01-01), or pass --time-col")
    first = np.unique(codes, return_index=True)[1]   # row of each distinct text's first use
    raw = pd.Series(np.asarray(uniques, dtype=object), index=column.index[first])
    text = raw.astype(str).str.strip()
    if (text == "").any():
        raise LstmcastError(f"{path} line {_line(text.index[text == ''][0])}, column '{time_col}': "
                            f"empty timestamp; every row needs one")
    aware = text.str.extract(_OFFSET)[0].notna()
    if aware.any() and not aware.all():
        naive_row, aware_row = raw.index[~aware.to_numpy()][0], raw.index[aware.to_numpy()][0]
        raise LstmcastError(f"{path} line {_line(naive_row)}, column '{time_col}': {text[naive_row]!r} has no "
                            f"UTC offset but line {_line(aware_row)} has ({text[aware_row]!r}); write every "
                            f"timestamp with its offset, or none")
    ordered, dayfirst = _reorder_dmy(path, text, time_col, dayfirst)
    source = ordered if ordered is not None else text
    offsets = source.str.extract(_OFFSET)[0] if aware.all() else None
    several = offsets is not None and offsets.nunique() > 1
    try:
        with warnings.catch_warnings():  # "could not infer format" would add lines to stderr
            warnings.simplefilter("ignore")
            times = pd.to_datetime(source, errors="coerce", format="ISO8601", utc=several)
            if times.isna().any() and ordered is None:
                times = pd.to_datetime(source, errors="coerce", utc=several)
    except (ValueError, TypeError, OverflowError) as exc:
        raise LstmcastError(f"{path}, column '{time_col}': cannot read timestamps ({exc}); "
                            f"use one format and one time zone") from None
    bad = times.isna()
    if bad.any():
        row = raw.index[bad][0]
        raise LstmcastError(f"{path} line {_line(row)}, column '{time_col}': cannot parse "
                            f"{str(raw[row])!r} as a timestamp; use e.g. 2024-01-31 or 2024-01-31 13:00")
    try:
        distinct = pd.DatetimeIndex(times).as_unit("ns")
    except (ValueError, OverflowError):
        raise LstmcastError(f"{path}, column '{time_col}': timestamps outside the years 1678..2261; "
                            f"check the dates") from None
    zone = None
    if several:
        latest = offsets.iloc[int(np.argmax(distinct.asi8))]
        zone = pd.Timestamp(f"2000-01-01T00:00{latest}".replace("Z", "+00:00")).tz
        wall = distinct + pd.to_timedelta(_offset_seconds(offsets).to_numpy(), unit="s")
        if len(np.unique(wall.tz_localize(None).asi8 % timegrid.DAY_NS)) == 1:
            # Daily or coarser data at one local time of day (midnight +01:00 / +02:00): the grid
            # is the wall clock's, held in the latest offset (so forecasts show local dates).
            distinct = wall.tz_localize(None).tz_localize(zone)
            zone = None
    return pd.Series(distinct[codes], index=column.index), zone, dayfirst


def _offset_seconds(offsets: pd.Series) -> pd.Series:
    """'+02:00', '-0530', '+01', 'Z' -> seconds east of UTC."""
    parts = offsets.str.replace("Z", "+00:00").str.extract(r"([+-])(\d{2}):?(\d{2})?")
    sign = np.where(parts[0] == "-", -1, 1)
    return pd.Series(sign * (parts[1].astype(int) * 3600 + parts[2].fillna("0").astype(int) * 60),
                     index=offsets.index)


def _parse_values(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        raise LstmcastError(f"{path}, column '{column}': holds true/false values, not numbers")
    if pd.api.types.is_numeric_dtype(raw):
        values = raw
        bad = np.isinf(values.to_numpy(dtype=float))
    else:
        values = pd.to_numeric(raw, errors="coerce")
        bad = (values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy() \
            | np.isinf(values.to_numpy(dtype=float))
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


def _long_table(path: Path, table: Table, columns: Columns, covariates: tuple[str, ...] = (),
                dayfirst: bool | None = None) -> tuple[pd.DataFrame, object, bool | None]:
    """((id, time, value, line, covariates...) rows, one per observation, in file order; zone;
    dayfirst as decided)."""
    frame = table.frame
    times, zone, dayfirst = _parse_times(path, frame, columns.time_col, dayfirst)
    shared = {name: _parse_covariate(path, frame, name) for name in covariates}
    values = {target: _parse_values(path, frame, target) for target in columns.targets}
    empty = [t for t, v in values.items() if v.isna().all()]
    if empty:
        raise LstmcastError(f"{path}, column '{empty[0]}': no values in any row; fill the column in "
                            f"or choose another with --target")
    parts = []
    for target in columns.targets:  # (a loop over target columns, not rows)
        if columns.id_in_input:
            ids = frame[columns.id_col].fillna("")
            missing = ids == ""
            if missing.any():
                raise LstmcastError(f"{path} line {_line(frame.index[missing][0])}, column "
                                    f"'{columns.id_col}': empty series id; every row needs one")
        else:
            ids = pd.Series(target, index=frame.index)
        parts.append(pd.DataFrame({"id": ids, "time": times, "value": values[target],
                                   "line": frame.index.to_numpy() + 2,
                                   **{f"cov:{k}": v for k, v in shared.items()}}))
    long = pd.concat(parts, ignore_index=True)
    dup = long.duplicated(["id", "time"], keep=False)
    if dup.any():
        rows = long[dup].sort_values(["id", "time", "line"])
        first, second = rows.iloc[0], rows.iloc[1]
        raise LstmcastError(f"{path} line {second['line']}: duplicate row for series "
                            f"'{second['id']}' at {second['time']} (first at line {first['line']}); "
                            f"keep one row per series and timestamp")
    return long, zone, dayfirst


def _show(time: pd.Timestamp) -> str:
    """A timestamp as a user wrote it: the date alone at midnight."""
    return str(time.date()) if time == time.normalize() and time.tz is None else str(time)


def same_frequency(a: str, b: str) -> bool:
    return timegrid.parse_freq(a) == timegrid.parse_freq(b)


def _sorted(table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """(rows sorted by series then time, series code per row, ids in file order)."""
    codes, ids = pd.factorize(table["id"], sort=False)
    order = np.lexsort((table["time"].to_numpy(), codes))
    return table.iloc[order].reset_index(drop=True), codes[order].astype(np.int64), [str(i) for i in ids]


def _regular_steps(times: pd.DatetimeIndex, codes: np.ndarray, ids: list[str]) -> None:
    """Series of 3+ points without gaps name their own step; two different ones are an error."""
    t = times.asi8
    same = codes[1:] == codes[:-1]
    diffs = pd.DataFrame({"code": codes[1:][same], "diff": (t[1:] - t[:-1])[same]})
    stats = diffs.groupby("code")["diff"].agg(["min", "max", "count"])
    regular = stats[(stats["count"] >= 2) & (stats["min"] == stats["max"])]
    steps = regular["min"].drop_duplicates()
    if len(steps) > 1:
        names = [timegrid.fixed_freq(int(s)).name for s in steps.iloc[:2]]
        a, b = (ids[int(c)] for c in steps.index[:2])
        raise LstmcastError(f"mixed frequencies: series '{a}' is '{names[0]}' but series '{b}' is "
                            f"'{names[1]}'; put series of one frequency in one file")


def resolve_frequency(path: Path, times: pd.DatetimeIndex, codes: np.ndarray, ids: list[str],
                      stated: str | None, trained: str | None = None) -> timegrid.Freq:
    """The frequency of the file: `trained` (a run's) or `stated` (data.freq) checked against
    every timestamp, else inferred from all series at once; never guessed."""
    starts = timegrid.series_starts(times, codes)
    given = trained or stated
    if given is not None:
        try:
            freq = timegrid.parse_freq(given)
        except timegrid.FreqError as exc:
            raise LstmcastError(f"config key 'data.freq' / --freq: {exc}") from None
        pos = timegrid.positions(freq, times, starts)
        if (pos >= 0).all():
            return freq
        k = int(np.flatnonzero(pos < 0)[0])
        if trained is not None:
            fits, _ = timegrid.infer(times, codes, len(ids))
            seen = f"the data has frequency '{fits[0].freq}' but " if len(fits) == 1 else ""
            raise LstmcastError(f"{path}: {seen}the model was trained on '{freq}' data and series "
                                f"'{ids[codes[k]]}' has {_show(times[k])} off that grid; use data of the trained "
                                f"frequency")
        where = "" if times[k] == starts[k] else f" counted from its first timestamp {_show(starts[k])}"
        raise LstmcastError(f"{path}: series '{ids[codes[k]]}' has {_show(times[k])}, which is not on the "
                            f"'{freq}' grid{where}; check data.freq / --freq")
    if len(times) == len(ids):
        raise LstmcastError(f"{path}: every series has a single timestamp, so the frequency "
                            f"cannot be inferred; give each series at least 3 rows, or pass --freq")
    try:
        _regular_steps(times, codes, ids)
    except LstmcastError as exc:
        raise LstmcastError(f"{path}: {exc}") from None
    fits, tried = timegrid.infer(times, codes, len(ids))
    if len(fits) == 1 and fits[0].missing <= len(times):
        return fits[0].freq
    if len(fits) > 1:
        raise LstmcastError(f"{path}: the timestamps fit several frequencies equally well "
                            f"({timegrid.describe(f.freq for f in fits)}); say which with --freq or "
                            f"data.freq")
    near = f" (nearest: '{fits[0].freq}', which would leave {fits[0].missing} of " \
           f"{fits[0].missing + len(times)} timestamps missing)" if fits else ""
    tried_text = f"; tried {timegrid.describe(tried)}" if tried and not fits else ""
    raise LstmcastError(f"{path}: the timestamps do not form a regular grid{near}{tried_text}; "
                        f"state the frequency with --freq or data.freq (e.g. D, B, W-WED, MS, MS@15, "
                        f"QE-DEC, YS-JAN, h)")


def _fill_flat(flat: np.ndarray, first: np.ndarray, last: np.ndarray, fill: str) -> np.ndarray:
    """Fill NaN in `flat` (series laid end to end; row k belongs to the series spanning
    first[k]..last[k]) without crossing series: ffill (leading gaps take the first value),
    interpolate (linear; ends carry the nearest value), zero."""
    if fill == "zero":
        return np.where(np.isnan(flat), 0.0, flat)
    n = len(flat)
    index = np.arange(n)
    valid = ~np.isnan(flat)
    before = np.maximum.accumulate(np.where(valid, index, -1))
    after = np.minimum.accumulate(np.where(valid, index, n)[::-1])[::-1]
    has_before, has_after = before >= first, after <= last
    prev = flat[np.clip(before, 0, n - 1)]
    nxt = flat[np.clip(after, 0, n - 1)]
    if fill == "ffill":
        out = np.where(has_before, prev, nxt)
    else:
        with np.errstate(all="ignore"):
            weight = (index - before) / (after - before)
            linear = prev + (nxt - prev) * weight
        out = np.where(has_before & has_after, linear, np.where(has_before, prev, nxt))
    return np.where(valid, flat, out)


def _regularise(path: Path, table: pd.DataFrame, codes: np.ndarray, ids: list[str], freq: timegrid.Freq,
                fill: str, covariates: tuple[str, ...] = ()
                ) -> tuple[list[pd.Timestamp], list[np.ndarray], list[np.ndarray]]:
    """Series on the grid, all at once; covariates at missing timestamps are filled like the values
    (zero: carried forward, as a covariate of 0 may mean something). `table` sorted by series."""
    times = pd.DatetimeIndex(table["time"])
    starts = timegrid.series_starts(times, codes)
    pos = timegrid.positions(freq, times, starts)
    lengths = np.zeros(len(ids), dtype=np.int64)
    np.maximum.at(lengths, codes, pos + 1)
    offsets = np.cumsum(lengths) - lengths
    slot = offsets[codes] + pos
    flat = np.full(int(lengths.sum()), np.nan)
    flat[slot] = table["value"].to_numpy(dtype=np.float64)
    member = np.repeat(np.arange(len(ids)), lengths)
    missing = np.isnan(flat)
    counts = np.bincount(member, weights=(~missing).astype(float), minlength=len(ids))
    if (counts == 0).any():
        none = [ids[i] for i in np.flatnonzero(counts == 0)]
        more = f" and {len(none) - 3} more" if len(none) > 3 else ""
        raise LstmcastError(f"{path}: {len(none)} series have no values ({', '.join(repr(i) for i in none[:3])}"
                            f"{more}); remove them or fill them in")
    gaps = int(len(flat) - len(table))
    empties = int(missing.sum()) - gaps
    first_rows = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
    series_starts = times[first_rows]
    if fill == "error" and missing.any():
        k = int(np.flatnonzero(missing)[0])
        at = timegrid.shift(freq, series_starts[[member[k]]], [k - offsets[member[k]]])[0]
        raise LstmcastError(f"{path}: {gaps} missing timestamps and {empties} empty values "
                            f"(first: series '{ids[member[k]]}' at {_show(at)}); choose a policy with "
                            f"--set data.fill=ffill|interpolate|zero")
    first, last = offsets[member], (offsets + lengths - 1)[member]
    filled = _fill_flat(flat, first, last, fill) if missing.any() else flat
    cuts = np.cumsum(lengths)[:-1]
    values = np.split(filled, cuts)
    extra = []
    if covariates:
        cov_fill = "interpolate" if fill == "interpolate" else "ffill"
        columns = []
        for name in covariates:  # (a loop over covariate columns, not rows)
            col = np.full(len(flat), np.nan)
            col[slot] = table[f"cov:{name}"].to_numpy(dtype=np.float64)
            columns.append(_fill_flat(col, first, last, cov_fill))
        extra = np.split(np.stack(columns, axis=1), cuts)
    return list(series_starts), values, extra


def read_series(path: str | Path, *, id_col: str | None = None, time_col: str | None = None,
                target: list[str] | None = None, fill: str = "error",
                expected_freq: str | None = None, covariates: list[str] | None = None,
                freq: str | None = None, dayfirst: bool | None = None) -> SeriesSet:
    """Read and validate a long or wide CSV into a SeriesSet (see the README's CSV contract).

    `expected_freq` is set when reading for a trained run: the columns and frequency are fixed.
    `covariates`: numeric columns read per row (in a wide file shared by every series).
    `freq`: the stated frequency (data.freq), checked against the data; None: inferred.
    `dayfirst`: how to read 01/02/2021 (data.dayfirst); None: from the data, error if ambiguous.
    """
    path = Path(path)
    table = _read_table(path, (id_col or DEFAULT_ID,))
    frame = table.frame
    names = tuple(covariates or ())
    trained = expected_freq is not None
    columns = resolve_columns(path, frame, id_col, time_col, list(target) if target else None,
                              trained=trained, covariates=names)
    check_covariates(path, frame, columns, names, trained)
    long, zone, dayfirst = _long_table(path, table, columns, names, dayfirst)
    long, codes, ids = _sorted(long)
    grid = resolve_frequency(path, pd.DatetimeIndex(long["time"]), codes, ids, freq, expected_freq)
    starts, values, extra = _regularise(path, long, codes, ids, grid, fill, names)
    return SeriesSet(columns, grid.name, ids, starts, values, extra if names else None, names, zone,
                     dayfirst)


def read_future(path: str | Path, series: SeriesSet, names: tuple[str, ...], steps: int) -> np.ndarray:
    """(n_series, steps, len(names)) future covariates from a --future CSV: a row per series
    (id column, unless the run's file was wide: then rows are shared) and forecast timestamp."""
    path = Path(path)
    cols = series.columns
    table = _read_table(path, (cols.id_col,) if cols.id_in_input else ())
    frame = table.frame
    for name in ([cols.id_col] if cols.id_in_input else []) + [cols.time_col, *names]:
        _require(path, frame, name, None)
    times, _, _ = _parse_times(path, frame, cols.time_col, series.dayfirst)
    ids = frame[cols.id_col].fillna("") if cols.id_in_input else pd.Series("", index=frame.index)
    # Instants on both sides of the merge: UTC nanoseconds (naive times as written).
    table = pd.DataFrame({"id": ids.to_numpy(), "time": _instants(pd.DatetimeIndex(times)),
                          "row": np.arange(len(frame))})
    dup = table.duplicated(["id", "time"], keep="first")
    if dup.any():
        row = int(table["row"][dup].iloc[0])
        raise LstmcastError(f"{path} line {_line(frame.index[row])}: duplicate row for series '{table['id'][row]}' at "
                            f"{times.iloc[row]}; keep one row per series and timestamp")
    need_ids = np.repeat(np.array(series.ids if cols.id_in_input else [""] * len(series), dtype=object), steps)
    need_times = series.all_future_times(steps)
    need = pd.DataFrame({"id": need_ids, "time": _instants(need_times)})
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


def _instants(times: pd.DatetimeIndex) -> np.ndarray:
    """int64 nanoseconds: UTC for zoned times, the wall clock for naive ones."""
    times = times.as_unit("ns")
    return (times.tz_convert("UTC").tz_localize(None) if times.tz is not None else times).asi8
