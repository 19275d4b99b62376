"""Reading a gridded long CSV into frames: one row per (timestamp, grid cell), value column(s).

A file such as

    ds,lat,lon,y
    2024-01-01,10,20,3.1
    2024-01-01,10,21,2.7
    ...

becomes a GridSet: every timestamp of a regular frequency, each a frame of (channels, height,
width) values, the grid being every combination of the coordinate values (lat rows, lon columns;
one coordinate column makes a 1 x N grid). Every timestamp must hold the whole grid, or
data.fill says how the gaps are filled (per cell, along time). Each problem is one LstmcastError
naming the file, the line, the column and what to do. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import timegrid
from ..csvread import DEFAULT_TARGET, DEFAULT_TIME, _at, _other, _parse_times, _parse_values, _read_table
from ..data import _fill_flat, _show, resolve_frequency
from ..errors import LstmcastError

MAX_GRID_COLS = 2


@dataclass(frozen=True)
class GridColumns:
    """How the user's file maps onto (time, grid coordinates, values)."""

    time_col: str
    grid_cols: tuple[str, ...]
    targets: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"time_col": self.time_col, "grid_cols": list(self.grid_cols), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict) -> GridColumns:
        return cls(d["time_col"], tuple(d["grid_cols"]), tuple(d["targets"]))


@dataclass
class GridSet:
    """Frames on a regular time grid. values: (frames, channels, height, width), float64."""

    columns: GridColumns
    coords: list[list[str]]        # per grid column, its values as written, in grid order
    times: pd.DatetimeIndex        # (frames,) every timestamp, regular
    values: np.ndarray
    freq: str
    dayfirst: bool | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of a frame."""
        return self.values.shape[2], self.values.shape[3]

    @property
    def n_cells(self) -> int:
        return self.values.shape[2] * self.values.shape[3]

    def future_times(self, steps: int) -> pd.DatetimeIndex:
        """The `steps` timestamps after the last frame."""
        return timegrid.future_times(timegrid.parse_freq(self.freq), self.times[-1:], steps)

    def head(self, drop_last: int) -> GridSet:
        """The same grid without its last `drop_last` frames."""
        keep = len(self.times) - drop_last
        return GridSet(self.columns, self.coords, self.times[:keep], self.values[:keep], self.freq, self.dayfirst)


def _sorted_coords(path: Path, name: str, values: pd.Series) -> list[str]:
    """Distinct coordinate texts in grid order: numerically if every one is a number, else as text.
    One number written two ways (7 and 7.0) would make two grid columns: an error."""
    distinct = pd.unique(values)
    numbers = pd.to_numeric(pd.Series(distinct), errors="coerce")
    if numbers.notna().all():
        twice = numbers[numbers.duplicated(keep=False)]
        if len(twice):
            same = [str(distinct[k]) for k in twice.index[numbers[twice.index] == twice.iloc[0]]]
            raise LstmcastError(f"{path}, column '{name}': {same[0]!r} and {same[1]!r} are the same coordinate "
                                f"written two ways; write each one the same way in every row")
        order = np.argsort(numbers.to_numpy(dtype=float), kind="stable")
    else:
        order = np.argsort(np.asarray(distinct, dtype=str), kind="stable")
    return [str(distinct[k]) for k in order]


def _resolve_columns(path: Path, frame: pd.DataFrame, grid: list[str], time_col: str | None,
                     target: list[str] | None, trained: bool) -> GridColumns:
    """The time, grid and value columns: the names given (or trained), else ds / y or the only
    datetime-like / numeric column left."""
    present = list(frame.columns)

    def require(name: str, option: str) -> None:
        if name not in present:
            todo = ("the run was trained on that column, so the data needs it too" if trained
                    else f"pass {option} with columns of the file")
            raise LstmcastError(f"{path}: column '{name}' not found (columns: {', '.join(present)}); {todo}")

    if len(grid) > MAX_GRID_COLS:
        raise LstmcastError(f"--grid-cols / data.grid lists {len(grid)} columns ({', '.join(grid)}); a grid "
                            f"has 1 or 2 coordinate columns, e.g. --grid-cols lat,lon")
    for name in grid:
        require(name, "--grid-cols")
    if time_col is not None:
        require(time_col, "--time-col")
    elif DEFAULT_TIME in present and DEFAULT_TIME not in grid:
        time_col = DEFAULT_TIME
    else:
        raise LstmcastError(f"{path}: no column '{DEFAULT_TIME}' (columns: {', '.join(present)}); pass --time-col")
    if time_col in grid:
        raise LstmcastError(f"{path}: '{time_col}' is both the time column and a grid column; they must differ")
    for name in target or []:
        require(name, "--target")
    if not target:
        if DEFAULT_TARGET in present and DEFAULT_TARGET not in (time_col, *grid):
            target = [DEFAULT_TARGET]
        else:
            numeric = [c for c in present if c not in (time_col, *grid) and pd.api.types.is_numeric_dtype(frame[c])]
            if len(numeric) != 1:
                found = f"several ({', '.join(numeric)})" if numeric else "none"
                raise LstmcastError(f"{path}: which value column to forecast? numeric columns besides time and "
                                    f"grid: {found}; pass --target (a comma list forecasts several channels)")
            target = numeric
    clash = [t for t in target if t == time_col or t in grid]
    if clash:
        raise LstmcastError(f"{path}: '{clash[0]}' is a value column and the time or a grid column; "
                            f"they must be different columns")
    return GridColumns(time_col, tuple(grid), tuple(target))


def _cell_text(path: Path, frame: pd.DataFrame, name: str) -> pd.Series:
    """A coordinate column as text; an empty cell is an error naming its line."""
    column = frame[name]
    empty = column.isna() | (column.astype(str).str.strip() == "")
    if empty.any():
        row = column.index[empty.to_numpy()][0]
        raise LstmcastError(f"{_at(path, row)}, column '{name}': empty grid coordinate; every row "
                            f"needs one")
    return column.astype(str).str.strip()


def _check_trained_coords(path: Path, name: str, found: list[str], trained: list[str]) -> None:
    extra = [c for c in found if c not in set(trained)]
    if extra:
        raise LstmcastError(f"{path}, column '{name}': value {extra[0]!r} is not on the grid the run was "
                            f"trained on ({len(trained)} values, {trained[0]}..{trained[-1]}); give the data "
                            f"of the trained grid")


def _describe_cell(columns: GridColumns, coords: list[list[str]], flat: int) -> str:
    """'lat=10, lon=21' for the flat (row-major) index of a cell."""
    if len(coords) == 1:
        return f"{columns.grid_cols[0]}={coords[0][flat]}"
    width = len(coords[1])
    return f"{columns.grid_cols[0]}={coords[0][flat // width]}, {columns.grid_cols[1]}={coords[1][flat % width]}"


def read_grid(path: str | Path, grid: list[str], *, time_col: str | None = None,
              target: list[str] | None = None, fill: str = "error", freq: str | None = None,
              dayfirst: bool | None = None, trained: dict | None = None) -> GridSet:
    """Read and validate a gridded long CSV.

    `trained`: reading for a trained run, {"freq": ..., "coords": [...]}: the frequency and the
    grid are the run's (another coordinate value is an error; a cell the file lacks is a gap).
    """
    path = Path(path)
    table = _read_table(path, text=tuple(grid))
    frame = table.frame
    columns = _resolve_columns(path, frame, list(grid), time_col, target, trained is not None)
    times, zone, dayfirst = _parse_times(path, frame, columns.time_col, dayfirst)
    if zone is not None:
        times = pd.Series(pd.DatetimeIndex(times).tz_convert(zone), index=times.index)
    texts = [_cell_text(path, frame, name) for name in columns.grid_cols]
    coords = [_sorted_coords(path, name, t) for name, t in zip(columns.grid_cols, texts)]
    if trained is not None:
        for name, found, known in zip(columns.grid_cols, coords, trained["coords"]):
            _check_trained_coords(path, name, found, known)
        coords = [list(c) for c in trained["coords"]]
    coords_full = coords
    codes = [pd.Index(c).get_indexer(t) for c, t in zip(coords, texts)]
    height, width = (1, len(coords_full[0])) if len(coords_full) == 1 else (len(coords_full[0]), len(coords_full[1]))
    cell = codes[0] if len(codes) == 1 else codes[0] * width + codes[1]

    distinct = pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(times))).sort_values()
    one = np.zeros(len(distinct), dtype=np.int64)
    resolved = resolve_frequency(path, distinct, one, ["grid"], freq, trained["freq"] if trained else None)
    frame_of = timegrid.positions(resolved, pd.DatetimeIndex(times), distinct[[0] * len(times)])
    n_frames = int(frame_of.max()) + 1
    key = frame_of * (height * width) + cell
    order = np.argsort(key, kind="stable")
    twice = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(twice):
        first, again = frame.index[order[twice[0]]], frame.index[order[twice[0] + 1]]
        at = times.iloc[order[twice[0]]]
        raise LstmcastError(f"{_at(path, again)}: timestamp {_show(at)}, "
                            f"{_describe_cell(columns, coords_full, int(cell[order[twice[0]]]))} appears again "
                            f"(first on {_other(path, first)}); keep one row per timestamp and grid cell")

    n_cells = height * width
    channels = []
    for name in columns.targets:   # a loop over value columns, not rows
        flat = np.full(n_frames * n_cells, np.nan)
        flat[key] = _parse_values(path, frame, name).to_numpy(dtype=np.float64)
        channels.append(flat.reshape(n_frames, n_cells))
    values = np.stack(channels, axis=1)            # (frames, channels, cells)
    missing = np.isnan(values)
    if missing.any():
        _fill_gaps(path, values, missing, key, n_frames, n_cells, columns, coords_full, fill, resolved, distinct[0])
    times_all = timegrid.shift(resolved, distinct[[0] * n_frames], np.arange(n_frames))
    return GridSet(columns, [list(c) for c in coords_full], times_all,
                   values.reshape(n_frames, len(columns.targets), height, width), str(resolved), dayfirst)


def _fill_gaps(path: Path, values: np.ndarray, missing: np.ndarray, key: np.ndarray, n_frames: int,
               n_cells: int, columns: GridColumns, coords: list[list[str]], fill: str,
               freq: timegrid.Freq, start: pd.Timestamp) -> None:
    """Fill `values` (frames, channels, cells) in place per cell along time, or say what is missing."""
    present = np.zeros(n_frames * n_cells, dtype=bool)
    present[key] = True
    present = present.reshape(n_frames, n_cells)
    lacking = (~present).sum(axis=1)               # cells without a row, per frame
    whole = int((lacking == n_cells).sum())
    partial = int(((lacking > 0) & (lacking < n_cells)).sum())
    empties = int((missing & present[:, None, :]).sum())
    never = np.flatnonzero(missing.all(axis=0).any(axis=0))
    if len(never):
        raise LstmcastError(f"{path}: grid cell {_describe_cell(columns, coords, int(never[0]))} has no value at any "
                            f"timestamp ({len(never)} such cells); the grid is every combination of the coordinate "
                            f"values: add its rows or remove the coordinate")
    if fill == "error":
        frame_k, _, cell_k = (int(i[0]) for i in np.nonzero(missing))
        at = _show(timegrid.shift(freq, pd.DatetimeIndex([start]), [frame_k])[0])
        if not present[frame_k].any():
            first = f"timestamp {at} has no rows"
        elif not present[frame_k, cell_k]:
            first = (f"timestamp {at} lacks {int(lacking[frame_k])} of {n_cells} grid cells (first: "
                     f"{_describe_cell(columns, coords, cell_k)})")
        else:
            first = f"timestamp {at}, {_describe_cell(columns, coords, cell_k)} has an empty value"
        raise LstmcastError(f"{path}: {first}; in all {whole} missing timestamps, {partial} incomplete frames "
                            f"and {empties} empty values; every timestamp needs the whole grid, or choose a "
                            f"policy with --set data.fill=ffill|interpolate|zero")
    # Per cell and channel, a series along time: laid end to end as (channels * cells, frames).
    series = values.transpose(1, 2, 0).reshape(-1, n_frames)
    flat = series.reshape(-1)
    first = np.repeat(np.arange(series.shape[0]) * n_frames, n_frames)
    filled = _fill_flat(flat, first, first + n_frames - 1, fill)
    values[:] = filled.reshape(values.shape[1], n_cells, n_frames).transpose(2, 0, 1)
