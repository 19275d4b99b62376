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


def csv_text(frame) -> str:
    """frame.to_csv(index=False), byte for byte, with each timestamp column formatted once per
    distinct time (forecasts repeat a few future times over every series): pandas formats the
    distinct times exactly as it would the whole column, since its format (date only, or date and
    time, with the zone) follows the set of values, which is the same."""
    import pandas as pd
    out = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column.dtype):
            codes, unique = pd.factorize(column)
            if len(unique) and len(unique) < len(column) // 4 and (codes >= 0).all():
                text = pd.DataFrame({name: unique}).to_csv(index=False, header=False, lineterminator="\n")
                column = pd.Series(np.asarray(text.split("\n")[:-1], dtype=object)[codes], index=frame.index)
        out[name] = column
    return pd.DataFrame(out).to_csv(index=False)
