"""Writing output files safely: atomic, through symlinks, keeping modes, never over an input.

Every file is written to a temporary name in the folder of the file it replaces and renamed over
it, so a reader never sees half a file and a crash, a full disk or a missing permission never
destroys the previous good copy. An `--out` that is a symlink keeps being one: its target is
replaced. A replaced file keeps its mode; a new one gets 0666 less the umask, as any editor's.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import numpy as np

from .errors import LstmcastError

# OS errors that are the user's environment, not a bug: what went wrong, what to do.
ENVIRONMENT_ERRORS = {
    errno.ENOSPC: ("no space left on device", "free some space and run again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space and run again"),
    errno.EACCES: ("permission denied", "fix the folder's permissions or choose another --out"),
    errno.EPERM: ("operation not permitted", "fix the folder's permissions or choose another --out"),
    errno.EROFS: ("read-only file system", "choose another --out"),
}


def environment_error(exc: OSError, path: str | Path, done: str = "nothing was changed") -> LstmcastError | None:
    """The one-line user error for an OS error the user can fix; None for anything else (a bug)."""
    known = ENVIRONMENT_ERRORS.get(exc.errno)
    if known is None:
        return None
    what, todo = known
    return LstmcastError(f"{what} writing {path}; {done}; {todo}")


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_target(path: str | Path) -> Path:
    """The file a write to `path` really replaces: the end of its symlink chain, if any."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_folder(path: str | Path) -> None:
    """An output's folder must exist: creating folders from a typo'd path hides the typo."""
    path = Path(path)
    if path.is_dir():
        raise LstmcastError(f"{path}: is a directory; give a file path to write")
    folder = write_target(path).parent
    if not folder.is_dir():
        raise LstmcastError(f"{folder}: folder does not exist; create it first or choose another --out")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` (through symlinks) so that it is either all there or not changed."""
    check_folder(path)
    target = write_target(path)
    try:
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o666 & ~_umask()
        _replace(target, data, mode)
    except OSError as exc:
        error = environment_error(exc, path)
        if error is None:
            raise
        raise error from None


def _replace(target: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600 whatever the umask
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def csv_text(frame, header: bool = True, times: dict | None = None) -> str:
    """frame.to_csv(index=False), byte for byte, with each timestamp column formatted once per
    distinct time (forecasts repeat a few future times over every series): pandas formats the
    distinct times exactly as it would the whole column, since its format (date only, or date and
    time, with the zone) follows the set of values, which is the same.

    `times` (column -> timestamps): formatted along with the column's own (and not written), so
    that a part of a table is written in the format of the whole: see stream.TimeFormat."""
    import pandas as pd
    out = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column.dtype):
            codes, unique = pd.factorize(column)
            shown = (times or {}).get(name)
            if shown is not None and len(shown) and (codes >= 0).all():
                unique = unique.append(pd.DatetimeIndex(shown))  # written, then dropped below
            if len(unique) and (shown is not None or len(unique) < len(column) // 4) and (codes >= 0).all():
                text = pd.DataFrame({name: unique}).to_csv(index=False, header=False, lineterminator="\n")
                column = pd.Series(np.asarray(text.split("\n")[:-1], dtype=object)[codes], index=frame.index)
        out[name] = column
    joined = _joined(out, header)
    return joined if joined is not None else pd.DataFrame(out).to_csv(index=False, header=header)


def _joined(columns: dict, header: bool) -> str | None:
    """The text of to_csv(index=False) for columns of float64 without NaN and of text without
    missing cells (forecasts), by joining the cells: each distinct text quoted once by the csv
    module as pandas' writer does, each number written as pandas writes it (numpy's str of a
    float64, which is Python's repr); None for any other column (pandas writes those)."""
    import pandas as pd
    cells = []
    for column in columns.values():
        values = np.asarray(column)
        if values.dtype == np.float64:
            if np.isnan(values).any():
                return None
            cells.append(list(map(repr, values.tolist())))
        elif values.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            codes, uniques = pd.factorize(values)
            if (codes < 0).any() or not all(type(u) is str for u in uniques):
                return None
            cells.append(np.asarray(_quoted(list(uniques)), dtype=object)[codes].tolist())
        else:
            return None
    rows = list(map(",".join, zip(*cells)))
    head = ",".join(_quoted([str(name) for name in columns])) + "\n" if header else ""
    return head + "\n".join(rows) + ("\n" if rows else "")


def _quoted(texts: list[str]) -> list[str]:
    """Each text as a cell of Python's csv writer (quoting minimal, lines ending in \\n): pandas'
    writer. A text without a comma, quote or line break (and not empty) is written as it is."""
    import csv
    import io
    out = list(texts)
    for k, text in enumerate(texts):
        if text == "" or any(c in text for c in ',"\r\n'):
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerow((text, ""))
            out[k] = buffer.getvalue()[:-2]   # less the ",\n" after the cell
    return out


PARQUET_OUT = (".parquet", ".pq")


def is_parquet(path: str | Path) -> bool:
    """An output named *.parquet / *.pq is written as Parquet; anything else as CSV."""
    return Path(path).suffix.lower() in PARQUET_OUT


def need_pyarrow(path: str | Path) -> None:
    """LstmcastError at once (before any work) when `path` is Parquet and pyarrow is missing."""
    if not is_parquet(path):
        return
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise LstmcastError(f"{path}: writing Parquet needs pyarrow; pip install 'lstmcast[parquet]' "
                            f"(or pyarrow), or write a .csv") from None


def arrow_schema(frame):
    """The Parquet columns of a forecast table: text as strings, timestamps as timestamps (their
    unit and zone), numbers as float64, also for an empty frame (where pandas has no types)."""
    import pandas as pd
    import pyarrow as pa
    fields = []
    for name in frame.columns:
        dtype = frame[name].dtype
        if isinstance(dtype, pd.DatetimeTZDtype):
            kind = pa.timestamp(dtype.unit, tz=str(dtype.tz))
        elif pd.api.types.is_datetime64_dtype(dtype):
            kind = pa.timestamp(np.datetime_data(dtype)[0])
        elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            kind = pa.float64()
        else:  # text (ids), or other objects (a grid's coordinates) as pyarrow reads them
            kind = pa.array(frame[name].to_numpy(dtype=object), from_pandas=True).type
            kind = pa.string() if pa.types.is_null(kind) else kind
        fields.append(pa.field(str(name), kind))
    return pa.schema(fields)


class TableWriter:
    """A table written in parts (CSV: the header once, then each part; Parquet: a row group per
    part) to a temporary file in the folder of `path`, renamed over it by commit(). Leaving the
    `with` block without commit() (an error, Ctrl-C) removes the temporary file: the previous
    output, if any, stays as it was. `restart()` empties it to write the table again.

    `csv`: frame, header -> the CSV text of a part (csv_text)."""

    def __init__(self, path: str | Path, csv=None):
        check_folder(path)
        self.path = Path(path)
        self.target = write_target(path)
        self.parquet = is_parquet(path)
        self.csv = csv or (lambda frame, header: csv_text(frame, header=header))
        self.rows = 0
        self._tmp: str | None = None
        self._handle = None
        self._writer = None
        self._guarded(self._open)

    def _guarded(self, action, *args):
        try:
            return action(*args)
        except OSError as exc:
            error = environment_error(exc, self.path)
            if error is None:
                raise
            self.abort()
            raise error from None

    def _open(self) -> None:
        self.mode = (stat.S_IMODE(self.target.stat().st_mode) if self.target.exists()
                     else 0o666 & ~_umask())
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp",
                                         dir=self.target.parent)
        self._handle = os.fdopen(fd, "wb")
        if self.parquet:  # pyarrow writes the file by its name
            self._handle.close()
        self._writer = None
        self.rows = 0

    def write(self, frame) -> None:
        """Append `frame`'s rows (the first part also fixes the header / the Parquet schema)."""
        self._guarded(self._write, frame)

    def _write(self, frame) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._tmp, arrow_schema(frame))
            if len(frame) or self.rows == 0:
                table = pa.Table.from_pandas(frame, schema=self._writer.schema, preserve_index=False)
                self._writer.write_table(table)
        else:
            self._handle.write(self.csv(frame, self._writer is None).encode("utf-8"))
            self._writer = True
        self.rows += len(frame)

    def restart(self) -> None:
        """Drop what was written so far: the table is written again from its first part."""
        self.abort()
        self._guarded(self._open)

    def commit(self) -> None:
        self._guarded(self._commit)

    def _commit(self) -> None:
        if self.parquet:
            if self._writer is None:
                raise ValueError("TableWriter.commit: nothing was written (not even the header)")
            self._writer.close()
            fd = os.open(self._tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        os.chmod(self._tmp, self.mode)  # mkstemp creates 0600 whatever the umask
        os.replace(self._tmp, self.target)
        self._tmp = None

    def abort(self) -> None:
        """Close and remove the temporary file (nothing else is touched)."""
        try:
            if self.parquet and self._writer is not None:
                try:
                    self._writer.close()
                except Exception:  # noqa: BLE001 - being discarded: its state no longer matters
                    pass
            if self._handle is not None and not self._handle.closed:
                self._handle.close()
        finally:
            if self._tmp is not None:
                Path(self._tmp).unlink(missing_ok=True)
                self._tmp = None

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._tmp is not None:
            self.abort()


def write_table(path: str | Path, frame) -> None:
    """`frame` to `path` at once, atomically: Parquet by suffix (.parquet, .pq), else CSV."""
    with TableWriter(path) as writer:
        writer.write(frame)
        writer.commit()
