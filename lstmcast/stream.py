"""A long table read in parts of whole series, for prediction in bounded memory.

The file is read incrementally (CSV: pandas' chunked reader with the dialect and text options of
csvread, or with pandas 3 blocks of whole rows parsed by pyarrow as pandas would parse them,
arrowcsv.py; Parquet: pyarrow's row batches, file after file for a folder); the rows, numbered as the
whole-file read numbers them (CSV lines, Parquet rows), are cut into tables of `chunk_series`
whole series each, in file order. That needs each series' rows together (files are usually
grouped by id): when an id turns up again after its rows ended, NotStreamable is raised and the
caller reads the file whole instead, as it always could.

TimeFormat keeps a part's timestamps written as the whole table's would be.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from . import arrowcsv, csvread, timegrid
from .columnar import _frame_copy, _parquet_files, by_rows
from .csvread import Table, _csv_errors, _other, _stripped, csv_options, data_start
from .errors import LstmcastError

READ_ROWS = 1 << 20   # rows read at a time (a CSV chunk, a Parquet batch)
READ_BYTES = 1 << 25  # a CSV's bytes read at a time by pyarrow (csvread.ARROW_CSV)


class NotStreamable(Exception):
    """The file cannot be forecast part by part with the same result as whole: the reason."""


def batches(path: Path, text: tuple[str, ...], rows: int | None = None,
            categories: tuple[str, ...] = ()) -> Iterator[Table]:
    """The file's rows, `rows` at a time, as csvread reads them whole: numbered alike, `text`
    columns as text, surrounding blanks of text removed; the text columns named in `categories`
    as pandas Categoricals (csvread._stripped)."""
    rows = rows or READ_ROWS
    if not path.exists():
        raise LstmcastError(f"{path}: file not found")
    if not by_rows(path) and not path.is_file():
        raise LstmcastError(f"{path}: not a file")
    parts = (_parquet_batches(path, text, rows, categories) if by_rows(path) else
             _csv_batches(path, text, rows, categories))
    empty = True
    for table in parts:
        if len(table.frame) == 0:
            continue
        empty = False
        yield _stripped(table, text, categories)
    if empty:
        raise LstmcastError(f"{path}: no data rows" + ("" if by_rows(path) else " below the header"))


def _csv_batches(path: Path, text: tuple[str, ...], rows: int, categories: tuple[str, ...] = ()) -> Iterator[Table]:
    """`rows` rows at a time, the `categories` columns parsed straight into Categoricals, each part
    in pandas' blocks (low_memory: faster; a value column typed as numbers in one block and text in
    another comes as objects, which csvread's parsing reads alike, as it does across parts)."""
    with _csv_errors(path):
        skip, options = csv_options(path, text, categories)
        start = data_start(path, skip) if csvread.ARROW_CSV else None
    if start is not None:
        yield from _arrow_batches(path, text, rows, categories, skip, options, start)
        return
    with _csv_errors(path):
        reader = pd.read_csv(path, chunksize=rows, **{**options, "low_memory": True})
    line = skip   # index of the next row: _line(index) is its line in the file
    with reader:
        while True:
            with _csv_errors(path), warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")   # DtypeWarning, overflow
                frame = next(reader, None)
            if frame is None:
                return
            frame.index = pd.RangeIndex(line, line + len(frame))
            line += len(frame)
            yield Table(frame, skip)


def _arrow_batches(path: Path, text: tuple[str, ...], rows: int, categories: tuple[str, ...], skip: int,
                   options: dict, start: int) -> Iterator[Table]:
    """`rows` rows at a time from parts of READ_BYTES of whole rows (csvread.ARROW_CSV), each
    part read by pyarrow as pandas reads it (arrowcsv, the columns typed on the file's first rows)
    or, where that declines, by pandas, as _csv_batches reads a part."""
    names, sep = options["names"], options["sep"]
    dictionary = tuple(n for n in categories if n in names)
    keep = tuple(n for n in text if n in names)
    kind: dict | None = None
    line = skip   # index of the next row: _line(index) is its line in the file
    with open(path, "rb") as handle:
        handle.seek(start)
        carry = b""
        while True:
            # The bytes read after the rows carried over, in one buffer, and handed on as views
            # (copies of 32 MB blocks were about 0.3 s at 100,000 series).
            block = bytearray(len(carry) + READ_BYTES)
            block[:len(carry)] = carry
            more = handle.readinto(memoryview(block)[len(carry):])
            end = len(carry) + more
            cut = arrowcsv.row_end(block, end) if more else end
            if cut <= 0 and more:   # no whole row yet: read on
                carry = bytes(block[:end])
                continue
            part, carry = memoryview(block)[:cut], bytes(block[cut:end])
            if not len(part):
                return
            if kind is None:
                kind = arrowcsv.kinds(part[:arrowcsv.PROBE_BYTES + 1], names, sep, text) or {}
            frame = arrowcsv.read(part, names, sep, 0, kind, dictionary, keep) if kind else None
            if frame is None:
                with _csv_errors(path), warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")   # DtypeWarning, overflow
                    frame = pd.read_csv(io.BytesIO(part), **{**options, "skiprows": 0, "encoding": "utf-8",
                                                             "low_memory": True})
            for lo in range(0, len(frame), rows):
                piece = frame if len(frame) <= rows else frame.iloc[lo:lo + rows].copy(deep=False)
                piece.index = pd.RangeIndex(line, line + len(piece))
                line += len(piece)
                yield Table(piece, skip)
            if not more:
                return


def _parquet_batches(path: Path, text: tuple[str, ...], rows: int, categories: tuple[str, ...] = ()
                     ) -> Iterator[Table]:
    """`rows` rows at a time, the text columns in `categories` read as dictionaries (Categoricals)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LstmcastError(f"{path}: reading Parquet needs pyarrow; pip install 'lstmcast[parquet]' "
                            f"(or pyarrow), or pass a CSV") from None
    files = _parquet_files(path)
    first, row = None, 0
    for file in files:
        try:
            # pre_buffer (pyarrow's default) keeps what it read ahead: memory grew with the file.
            parts = pq.ParquetFile(file, pre_buffer=False, buffer_size=1 << 22, read_dictionary=list(categories))
            names = list(parts.schema_arrow.names)
            pieces = parts.iter_batches(batch_size=rows)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise LstmcastError(f"{file}: not a readable Parquet file ({str(exc).strip()})") from None
        names = [n for n in names if not n.startswith("__index_level_")]
        if first is None:
            first = names
        elif names != first:
            raise LstmcastError(f"{file}: its columns differ from {files[0].name}'s; every file of the "
                                f"folder needs the same columns")
        while True:
            try:
                batch = next(pieces, None)
            except (OSError, ValueError) as exc:
                raise LstmcastError(f"{file}: not a readable Parquet file ({str(exc).strip()})") from None
            if batch is None:
                break
            frame = _frame_copy(path, batch.to_pandas(), text, copy=False)
            frame.index = pd.RangeIndex(row, row + len(frame))
            row += len(frame)
            yield Table(frame)


def series_tables(path: Path, id_col: str, chunk_series: int, rows: int | None = None,
                  categories: tuple[str, ...] = ()) -> Iterator[Table]:
    """Tables of `chunk_series` (>= 1) whole series each, the last one fewer, in file order, the id
    column (and the text columns in `categories`) as pandas Categoricals. NotStreamable when a
    series' rows are not together. A file without the id column comes as one table (whose
    reading names what is missing)."""
    categories = (id_col, *categories)
    finished = np.zeros(0, dtype=np.uint64)   # hashes of the ids already handed out, sorted
    pending: pd.DataFrame | None = None       # rows read but not handed out: whole series, then the last one
    for table in batches(path, (id_col,), rows, categories):
        if id_col not in table.frame.columns:
            yield table
            return
        frame = table.frame if pending is None else _concat(pending, table.frame)
        starts, hashes = _runs(path, frame, id_col, finished)
        complete = len(starts) - 1            # the last series may go on in the next rows
        ready = complete - complete % chunk_series
        for k in range(0, ready, chunk_series):
            yield Table(frame.iloc[starts[k]:starts[k + chunk_series]], table.skipped)
        # Two sorted runs: a stable sort (timsort) merges them in one pass.
        finished = np.sort(np.concatenate([finished, np.sort(hashes[:ready])]), kind="stable")
        pending = _unused_dropped(frame.iloc[starts[ready]:]) if ready < len(starts) else None
        skip = table.skipped
    if pending is not None:
        starts, _ = _runs(path, pending, id_col, finished)
        bounds = list(starts[::chunk_series]) + [len(pending)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            yield Table(pending.iloc[lo:hi], skip)


def _concat(first: pd.DataFrame, then: pd.DataFrame) -> pd.DataFrame:
    """The rows of both; Categorical columns stay Categoricals (of both's categories)."""
    first, then = first.copy(deep=False), then.copy(deep=False)
    for name in first.columns:
        a, b = first[name], then[name]
        if isinstance(a.dtype, pd.CategoricalDtype) and isinstance(b.dtype, pd.CategoricalDtype):
            # Text categories as object (pandas 3 may infer its str dtype for some and not others).
            ours, theirs = (pd.Index(np.asarray(c.cat.categories, dtype=object), dtype=object) for c in (a, b))
            both = ours.append(theirs[~theirs.isin(ours)])
            codes = b.cat.codes.to_numpy()
            moved = both.get_indexer(theirs)
            first[name] = pd.Categorical.from_codes(a.cat.codes.to_numpy(), categories=both)
            then[name] = pd.Categorical.from_codes(np.where(codes >= 0, moved[np.maximum(codes, 0)] if len(moved)
                                                            else -1, -1), categories=both)
    return pd.concat([first, then])


def _unused_dropped(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns without the categories no row uses (they would pile up read after
    read), recoded in one pass (pandas' remove_unused_categories sorts the codes)."""
    frame = frame.copy(deep=False)
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            column = frame[name].array
            codes = np.asarray(column.codes, dtype=np.int64)
            used = np.zeros(len(column.categories), dtype=bool)
            used[codes[codes >= 0]] = True
            renumber = np.cumsum(used) - 1
            frame[name] = pd.Categorical.from_codes(np.where(codes >= 0, renumber[codes], -1),
                                                    categories=column.categories[used])
    return frame


def _runs(path: Path, frame: pd.DataFrame, id_col: str, finished: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each run of one id, the hash of each run's id). NotStreamable when an id has
    two runs here, or one already handed out. The id column: a Categorical."""
    column = frame[id_col].array
    codes, uniques = np.asarray(column.codes, dtype=np.int64), column.categories   # a missing id: -1
    starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1] if len(codes) else np.zeros(0, np.int64)
    run_codes = codes[starts]
    if len(np.unique(run_codes)) != len(run_codes):
        seen: set = set()
        again = next(k for k, c in enumerate(run_codes) if c in seen or seen.add(c))
        raise _again(path, frame, id_col, starts[again])
    hashes = np.r_[pd.util.hash_array(np.asarray(uniques, dtype=object)), np.uint64(0)][run_codes]
    if len(finished):
        where = np.searchsorted(finished, hashes).clip(0, len(finished) - 1)
        again = np.flatnonzero(finished[where] == hashes)
        if len(again):
            raise _again(path, frame, id_col, starts[again[0]])
    return starts, hashes


def _again(path: Path, frame: pd.DataFrame, id_col: str, at: int) -> NotStreamable:
    return NotStreamable(f"series '{frame[id_col].iloc[at]}' comes again at {_other(path, frame.index[at])}, "
                         f"after other series")


class TimeFormat:
    """pandas writes a timestamp column as dates alone when every time is midnight, and with as
    many decimals of a second as the column's finest time needs: one timestamp of each kind
    seen so far, written along with each part (outputs.csv_text(times=...)), gives every part the
    format of the whole table, once every kind has been seen."""

    def __init__(self) -> None:
        self.kinds: dict[int, pd.Timestamp] = {}

    def add(self, times) -> bool:
        """Note the kinds of `times`; True when one was new."""
        times = pd.DatetimeIndex(times)
        if not len(times):
            return False
        wall = (times.tz_localize(None) if times.tz is not None else times).as_unit("ns").asi8
        kind = ((wall % timegrid.DAY_NS != 0) * 1 + (wall % 1000 != 0) * 2
                + ((wall // 1000) % 1000 != 0) * 4 + ((wall // 1_000_000) % 1000 != 0) * 8)
        found, first = np.unique(kind, return_index=True)
        new = [int(k) for k in found if int(k) not in self.kinds]
        for k, at in zip(found, first):
            self.kinds.setdefault(int(k), times[int(at)])
        return bool(new)

    def shown(self) -> pd.DatetimeIndex | None:
        return pd.DatetimeIndex(list(self.kinds.values())) if self.kinds else None
