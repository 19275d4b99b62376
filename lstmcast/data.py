"""CSV -> validated series on a regular time grid: SeriesSet, the long table of observations,
the frequency (stated, trained or inferred), the fill policies, and read_series / read_future.
Reading the file's cells is csvread.py's job.

Every problem a user can fix is a LstmcastError naming the file, the line (1-based, the header
is line 1), the column and what to do. Nothing here writes files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import gridinfer, timegrid
from .csvread import (  # noqa: F401  (Columns, DEFAULT_*, NA_TEXT, Table, resolve_columns, check_covariates re-exported)
    DEFAULT_ID,
    DEFAULT_TARGET,
    DEFAULT_TIME,
    NA_TEXT,
    Columns,
    FrameName,
    Table,
    _at,
    _other,
    _parse_covariate,
    _parse_times,
    _parse_values,
    _read_table,
    _require,
    check_covariates,
    resolve_columns,
)
from .errors import LstmcastError
from .keys import FILL_POLICIES  # noqa: F401  (data.fill's values, declared with the key)


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

    def last_points(self, keep: int) -> SeriesSet:
        """The same series, each cut to its last `keep` points (shorter ones whole): what a
        forecast from the end reads, without the rest of the history."""
        lengths = self.lengths()
        drop = np.maximum(lengths - keep, 0)
        if not drop.any():
            return self
        starts = list(timegrid.shift(self.grid, pd.DatetimeIndex(self.starts), drop))
        covariates = (None if self.covariates is None else
                      [c[d:] for c, d in zip(self.covariates, drop)])
        return SeriesSet(self.columns, self.freq, list(self.ids), starts,
                         [v[d:] for v, d in zip(self.values, drop)], covariates, self.covariate_names,
                         self.zone, self.dayfirst)

    def subset(self, index: list[int]) -> SeriesSet:
        """Series `index` only, in that order."""
        covariates = None if self.covariates is None else [self.covariates[i] for i in index]
        return SeriesSet(self.columns, self.freq, [self.ids[i] for i in index],
                         [self.starts[i] for i in index], [self.values[i] for i in index],
                         covariates, self.covariate_names, self.zone, self.dayfirst)


def _long_table(path: Path, table: Table, columns: Columns, covariates: tuple[str, ...] = (),
                dayfirst: bool | None = None, facts: dict | None = None
                ) -> tuple[pd.DataFrame, object, bool | None]:
    """((id, time, value, line, covariates...) rows, one per observation, in file order; zone;
    dayfirst as decided)."""
    frame = table.frame
    times, zone, dayfirst = _parse_times(path, frame, columns.time_col, dayfirst, facts)
    shared = {name: _parse_covariate(path, frame, name) for name in covariates}
    values = {target: _parse_values(path, frame, target) for target in columns.targets}
    empty = [t for t, v in values.items() if v.isna().all()]
    if empty:
        raise LstmcastError(f"{path}, column '{empty[0]}': no values in any row; fill the column in "
                            f"or choose another with --target")
    parts = []
    if columns.id_in_input:  # as categories: each distinct id compared once, and _sorted reads the codes
        codes, uniques = pd.factorize(frame[columns.id_col])
        missing = (codes < 0) | np.isin(codes, np.flatnonzero(np.asarray(uniques == "")))
        if missing.any():
            raise LstmcastError(f"{_at(path, frame.index[missing][0])}, column "
                                f"'{columns.id_col}': empty series id; every row needs one")
        known = pd.Series(pd.Categorical.from_codes(codes, pd.Index(np.asarray(uniques, dtype=object))),
                          index=frame.index)
    for target in columns.targets:  # (a loop over target columns, not rows)
        ids = known if columns.id_in_input else pd.Series(target, index=frame.index)
        # copy=False: the columns are not written to after (pandas' copy of 12M rows: 0.3-0.8 s)
        parts.append(pd.DataFrame({"id": ids, "time": times, "value": values[target],
                                   "row": frame.index.to_numpy(),
                                   **{f"cov:{k}": v for k, v in shared.items()}}, copy=False))
    if len(parts) == 1:
        parts[0].index = pd.RangeIndex(len(parts[0]))
        return parts[0], zone, dayfirst
    return pd.concat(parts, ignore_index=True), zone, dayfirst


def _show(time: pd.Timestamp) -> str:
    """A timestamp as a user wrote it: the date alone at midnight."""
    return str(time.date()) if time == time.normalize() and time.tz is None else str(time)


def same_frequency(a: str, b: str) -> bool:
    return timegrid.parse_freq(a) == timegrid.parse_freq(b)


def _sorted(path: Path, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """(rows sorted by series then time, series code per row, ids in file order); two rows of a
    series with one timestamp are an error (sorted, they are neighbours)."""
    codes, ids = pd.factorize(table["id"], sort=False)
    codes, times = np.asarray(codes, dtype=np.int64), table["time"].to_numpy()
    same = codes[1:] == codes[:-1]
    # Files usually come sorted: a check in one pass instead of a sort and a copy of every column.
    in_order = bool(((codes[1:] > codes[:-1]) | (same & (times[1:] >= times[:-1]))).all()) if len(codes) else True
    order = None if in_order else np.lexsort((times, codes))  # stable: equal rows keep file order
    if order is not None:
        codes, times = codes[order], times[order]
        same = codes[1:] == codes[:-1]
    dup = same & (times[1:] == times[:-1])
    if dup.any():
        rows = table["row"].to_numpy() if order is None else table["row"].to_numpy()[order]
        pairs = pd.DataFrame({"id": [str(ids[c]) for c in codes[1:][dup]], "time": times[1:][dup],
                              "first": rows[:-1][dup], "row": rows[1:][dup]})
        worst = pairs.sort_values(["id", "time", "first"]).iloc[0]
        first = _other(path, worst["first"])
        raise LstmcastError(f"{_at(path, worst['row'])}: duplicate row for series "
                            f"'{worst['id']}' at {pd.Timestamp(worst['time'])} (first at {first}); "
                            f"keep one row per series and timestamp")
    table = table if order is None else table.iloc[order].reset_index(drop=True)
    return table, codes, [str(i) for i in ids]


def _regular_steps(times: pd.DatetimeIndex, codes: np.ndarray, ids: list[str]) -> None:
    """Series of 3+ points without gaps name their own step; two different ones are an error."""
    t = times.asi8
    same = codes[1:] == codes[:-1]
    code, diff = codes[1:][same], (t[1:] - t[:-1])[same]
    if len(code) == 0:
        return
    # Rows are sorted by series: each series' differences are one run (reduceat, no groupby).
    first = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    count = np.diff(np.r_[first, len(code)])
    low, high = np.minimum.reduceat(diff, first), np.maximum.reduceat(diff, first)
    regular = (count >= 2) & (low == high)
    steps, where = np.unique(low[regular], return_index=True)   # each step, at its first series
    if len(steps) > 1:
        order = np.argsort(where)[:2]   # the first two steps in file order, as before
        names = [timegrid.fixed_freq(int(s)).name for s in steps[order]]
        a, b = (ids[int(c)] for c in code[first[regular][where[order]]])
        raise LstmcastError(f"mixed frequencies: series '{a}' is '{names[0]}' but series '{b}' is "
                            f"'{names[1]}'; put series of one frequency in one file")


def resolve_frequency(path: Path, times: pd.DatetimeIndex, codes: np.ndarray, ids: list[str],
                      stated: str | None, trained: str | None = None, found: dict | None = None) -> timegrid.Freq:
    """The frequency of the file: `trained` (a run's) or `stated` (data.freq) checked against
    every timestamp, else inferred from all series at once; never guessed. `found`, if given,
    keeps the checked "positions" (timegrid.positions) for _regularise."""
    wall = timegrid.WallTimes(times)   # calendar fields computed once, for every check below
    given = trained or stated
    if given is not None:
        try:
            freq = timegrid.parse_freq(given)
        except timegrid.FreqError as exc:
            raise LstmcastError(f"config key 'data.freq' / --freq: {exc}") from None
        pos = gridinfer.Rows(wall, codes).positions(freq)
        if (pos >= 0).all():
            if found is not None:
                found["positions"] = pos
            return freq
        k = int(np.flatnonzero(pos < 0)[0])
        start = times[timegrid.start_rows(codes)[k]]
        if trained is not None:
            fits, _ = gridinfer.infer(wall, codes, len(ids))
            seen = f"the data has frequency '{fits[0].freq}' but " if len(fits) == 1 else ""
            raise LstmcastError(f"{path}: {seen}the model was trained on '{freq}' data and series "
                                f"'{ids[codes[k]]}' has {_show(times[k])} off that grid; use data of the trained "
                                f"frequency")
        where = "" if times[k] == start else f" counted from its first timestamp {_show(start)}"
        raise LstmcastError(f"{path}: series '{ids[codes[k]]}' has {_show(times[k])}, which is not on the "
                            f"'{freq}' grid{where}; check data.freq / --freq")
    if len(times) == len(ids):
        raise LstmcastError(f"{path}: every series has a single timestamp, so the frequency "
                            f"cannot be inferred; give each series at least 3 rows, or pass --freq")
    try:
        _regular_steps(times, codes, ids)
    except LstmcastError as exc:
        raise LstmcastError(f"{path}: {exc}") from None
    fits, tried = gridinfer.infer(wall, codes, len(ids))
    if len(fits) == 1 and fits[0].missing <= len(times):
        if found is not None:
            found["positions"] = fits[0].positions
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
                fill: str, covariates: tuple[str, ...] = (), pos: np.ndarray | None = None
                ) -> tuple[list[pd.Timestamp], list[np.ndarray], list[np.ndarray]]:
    """Series on the grid, all at once; covariates at missing timestamps are filled like the values
    (zero: carried forward, as a covariate of 0 may mean something). `table` sorted by series;
    `pos`: its timegrid.positions, if known."""
    times = pd.DatetimeIndex(table["time"])
    if pos is None:
        pos = timegrid.positions(freq, times, timegrid.series_starts(times, codes))
    # Sorted by series (codes 0, 1, ... in turn), then time: a series' last row has its last position.
    first_rows = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
    lengths = pos[np.r_[first_rows[1:] - 1, len(codes) - 1]].astype(np.int64) + 1
    offsets = np.cumsum(lengths) - lengths
    slot = offsets[codes] + pos
    flat = np.full(int(lengths.sum()), np.nan)
    observed = table["value"].to_numpy(dtype=np.float64)
    flat[slot] = observed
    counts = np.add.reduceat(~np.isnan(observed), first_rows, dtype=np.int64) if len(codes) else np.zeros(0)
    missing = np.isnan(flat)
    if (counts == 0).any():
        none = [ids[i] for i in np.flatnonzero(counts == 0)]
        more = f" and {len(none) - 3} more" if len(none) > 3 else ""
        raise LstmcastError(f"{path}: {len(none)} series have no values ({', '.join(repr(i) for i in none[:3])}"
                            f"{more}); remove them or fill them in")
    gaps = int(len(flat) - len(table))
    empties = int(missing.sum()) - gaps
    series_starts = times[first_rows]
    member = np.repeat(np.arange(len(ids)), lengths) if missing.any() or covariates else None
    if fill == "error" and missing.any():
        k = int(np.flatnonzero(missing)[0])
        at = timegrid.shift(freq, series_starts[[member[k]]], [k - offsets[member[k]]])[0]
        raise LstmcastError(f"{path}: {gaps} missing timestamps and {empties} empty values "
                            f"(first: series '{ids[member[k]]}' at {_show(at)}); choose a policy with "
                            f"--set data.fill=ffill|interpolate|zero")
    if member is not None:
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


def read_series(path: str | Path | pd.DataFrame, *, id_col: str | None = None, time_col: str | None = None,
                target: list[str] | None = None, fill: str = "error",
                expected_freq: str | None = None, covariates: list[str] | None = None,
                freq: str | None = None, dayfirst: bool | None = None, name: str = "data frame") -> SeriesSet:
    """Read and validate a long or wide table into a SeriesSet (see the README's CSV contract):
    a CSV, a Parquet file or folder of Parquet files (by suffix), or a pandas DataFrame (never
    changed; messages call it `name` and number its rows from 1).

    `expected_freq` is set when reading for a trained run: the columns and frequency are fixed.
    `covariates`: numeric columns read per row (in a wide file shared by every series).
    `freq`: the stated frequency (data.freq), checked against the data; None: inferred.
    `dayfirst`: how to read 01/02/2021 (data.dayfirst); None: from the data, error if ambiguous.
    """
    given = path if isinstance(path, pd.DataFrame) else None
    path = FrameName(name) if given is not None else Path(path)
    # The id and time columns as Categoricals: their text is held and stripped once per distinct
    # value (a CSV's parsed straight into codes), and _long_table reads the codes.
    table = _read_table(path, (id_col or DEFAULT_ID,), given,
                        categories=(id_col or DEFAULT_ID, time_col or DEFAULT_TIME))
    return series_from_table(path, table, id_col=id_col, time_col=time_col, target=target, fill=fill,
                             expected_freq=expected_freq, covariates=covariates, freq=freq, dayfirst=dayfirst)


def series_from_table(path, table: Table, *, id_col: str | None = None, time_col: str | None = None,
                      target: list[str] | None = None, fill: str = "error", expected_freq: str | None = None,
                      covariates: list[str] | None = None, freq: str | None = None,
                      dayfirst: bool | None = None, facts: dict | None = None) -> SeriesSet:
    """read_series of a table already read (the whole file, or whole series of it: stream.py).
    `facts`, if given, records "offsets" (_parse_times)."""
    frame = table.frame
    names = tuple(covariates or ())
    trained = expected_freq is not None
    columns = resolve_columns(path, frame, id_col, time_col, list(target) if target else None,
                              trained=trained, covariates=names)
    check_covariates(path, frame, columns, names, trained)
    long, zone, dayfirst = _long_table(path, table, columns, names, dayfirst, facts)
    long, codes, ids = _sorted(path, long)
    found: dict = {}
    grid = resolve_frequency(path, pd.DatetimeIndex(long["time"]), codes, ids, freq, expected_freq, found)
    starts, values, extra = _regularise(path, long, codes, ids, grid, fill, names, found.get("positions"))
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
        raise LstmcastError(f"{_at(path, frame.index[row])}: duplicate row for series '{table['id'][row]}' at "
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
