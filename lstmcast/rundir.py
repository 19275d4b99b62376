"""The run directory: its marker, its lock, and its crash-safe replacement (--overwrite).

- A run directory holds a marker file, MARKER, written before anything else. Only a directory
  with the marker (or a run of an older lstmcast: config.yaml plus model.pt or last.pt) is ever
  replaced or cleared; anything else is refused, whatever the flags.
- One train per run directory at a time: an exclusive OS lock on `.NAME.lock` beside it (in the
  parent, so it survives the swap), holding the holder's pid, host and start time.
- --overwrite trains into `.NAME.partial-PID` and swaps it in at the end: on Linux with one atomic
  exchange (renameat2), so NAME always holds a whole run; elsewhere (or on a file system without
  it) with two renames (`NAME -> .NAME.old-PID`, `.NAME.partial-PID -> NAME`). A kill between
  those leaves no NAME but a complete `.NAME.old-PID`: the next start (under the lock, so no other
  run is using them) restores it, and removes the leftovers of killed runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import outputs
from .checkpoint import BEST, LAST
from .config import Config, read_yaml
from .errors import LstmcastError
from .outputs import environment_error

MARKER = ".lstmcast-run"
MARKER_FORMAT = 1
LOCK_SUFFIX = ".lock"


@dataclass
class Recovered:
    """An event: the start of a train repaired what a killed run left behind."""

    message: str


# ---------------------------------------------------------------------------------------------
# What a directory is


def is_run(path: Path) -> bool:
    """An lstmcast run directory: the marker, or (older versions, before the marker) a config
    with a checkpoint."""
    if (path / MARKER).is_file():
        return True
    return (path / "config.yaml").is_file() and ((path / BEST).is_file() or (path / LAST).is_file())


def _started(path: Path) -> bool:
    """Whether a run finished an epoch (it holds weights someone might want)."""
    return (path / BEST).exists() or (path / LAST).exists()


def _entries(path: Path) -> str:
    names = sorted(os.listdir(path))
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} {'entry' if len(names) == 1 else 'entries'}: {shown}"


def write_marker(path: Path) -> None:
    """Mark `path` as a run directory; the first file written into a new one."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (path / MARKER).write_text(json.dumps({"format": MARKER_FORMAT, "created": created}) + "\n")


# ---------------------------------------------------------------------------------------------
# Outputs of other commands: never an input, never inside a run


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (through symlinks and hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: Path, folder: Path) -> bool:
    real, real_folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real_folder == real or real_folder in real.parents


def check_output(out: str | Path, inputs: list[str | Path | None], run_dir: str | Path | None = None) -> None:
    """Refuse an --out that would overwrite one of the command's inputs or a run's files."""
    out = Path(out)
    outputs.check_folder(out)
    for given in inputs:
        if given is not None and _same(out, Path(given)):
            raise LstmcastError(f"{out}: is also an input of this command ({given}); writing it would "
                                f"destroy that input; choose another --out")
    if run_dir is not None and Path(run_dir).is_dir() and _inside(out, Path(run_dir)):
        raise LstmcastError(f"{out}: lies inside the run directory {run_dir}, which only "
                            f"'lstmcast train' writes; choose another --out")
    run = enclosing_run(out)
    if run is not None:  # another run: its next --overwrite would delete the file
        raise LstmcastError(f"{out}: lies inside the run directory {run}, which only "
                            f"'lstmcast train' writes; choose another --out")


def enclosing_run(path: Path) -> Path | None:
    """The run directory `path` lies in (through symlinks), if any."""
    real = Path(os.path.realpath(path))
    return next((folder for folder in real.parents if is_run(folder)), None)


# ---------------------------------------------------------------------------------------------
# The lock


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on `fd` without waiting; False if someone else holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: lock the first byte instead
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)  # not os.pread: Windows has none
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, AttributeError):
        return "details not written yet"


class RunLock:
    """Exclusive lock on one run directory for the whole of a train, --overwrite swap included.

    The lock file is removed on release. A process that locked a file someone removed meanwhile
    sees that the path no longer names its file and tries again, so two never both hold it.
    """

    def __init__(self, out: Path):
        self.out, self.path, self.fd = out, lock_path(out), -1

    def __enter__(self) -> RunLock:
        if not self.out.parent.is_dir():
            raise LstmcastError(f"{self.out.parent}: folder does not exist; create it first (train "
                                f"creates the run directory {self.out.name}, not its parents)")
        while self.fd < 0:
            fd = self._open()
            if not _try_lock(fd):
                holder = _holder(fd)
                os.close(fd)
                raise LstmcastError(f"{self.out}: another 'lstmcast train' is writing it ({holder}); "
                                    f"wait for it to finish or choose another --out")
            if self._still_ours(fd):
                self.fd = fd
            else:
                os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:  # who holds it, for the message of the one turned away
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
            os.write(self.fd, (json.dumps(info) + "\n").encode())
        except OSError as exc:
            self.__exit__()
            error = environment_error(exc, self.path)
            if error is None:
                raise
            raise error from None
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            error = environment_error(exc, self.path)
            if error is None:
                raise
            raise error from None

    def _still_ours(self, fd: int) -> bool:
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def __exit__(self, *exc) -> None:
        if os.name != "nt":  # Windows cannot remove an open file; the empty lock file stays
            self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing releases the lock
        self.fd = -1


# ---------------------------------------------------------------------------------------------
# Leftovers of killed runs


def _leftovers(out: Path, kind: str) -> list[Path]:
    prefix = f".{out.name}.{kind}-"
    found = [out.parent / name for name in os.listdir(out.parent) if name.startswith(prefix)]
    return sorted((p for p in found if p.is_dir() and not p.is_symlink()),
                  key=lambda p: p.stat().st_mtime_ns, reverse=True)


def recover(out: Path) -> list[Recovered]:
    """Repair what killed runs left beside `out`; call it holding the lock (no one else is using
    them then). Returns what was done, for the user to see."""
    done = []
    olds = _leftovers(out, "old")
    if olds and not os.path.lexists(out):
        # Killed between the two renames of a swap: the previous run goes back in place.
        os.rename(olds[0], out)
        done.append(Recovered(f"{out}: restored the previous run from {olds[0].name} (an --overwrite "
                              f"was killed while swapping)"))
        olds = olds[1:]
    for old in olds:  # a swap that completed, killed before it removed the replaced run
        shutil.rmtree(old)
        done.append(Recovered(f"{out}: removed {old.name}, the run a finished --overwrite replaced"))
    for partial in _leftovers(out, "partial"):
        shutil.rmtree(partial)
        done.append(Recovered(f"{out}: removed {partial.name}, the unfinished work of a killed "
                              f"--overwrite"))
    return done


# ---------------------------------------------------------------------------------------------
# Where a train writes, and the swap


def saved_config(run_dir: Path) -> Config | None:
    """The config an interrupted run was started with (its config.yaml: the base for --resume),
    None if it has none."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    advice = "the run cannot be resumed; train it again with --overwrite instead of --resume"
    tree = read_yaml(path, "saved config", advice)
    if not isinstance(tree, dict):
        raise LstmcastError(f"{path}: not a readable lstmcast config; {advice}")
    try:
        from .run import config_from_saved  # an older run's config.yaml migrated there
        return config_from_saved(tree)
    except LstmcastError as exc:
        raise LstmcastError(f"{path}: {exc}; {advice}") from None


def locked(data_path, out_dir, config, resume: bool, overwrite: bool, on_event, body, lock: bool = True):
    """What every training run does around its work: the run directory resolved (a symlink is
    followed; the link stays), the flags checked, the lock held throughout, what killed runs left
    behind repaired (a Recovered event each), the data checked against the directory, and with
    `resume` and no `config` the run's saved config. Returns body(data_path, out, config, resume,
    overwrite, on_event). Without `lock` (a torchrun rank other than 0, which writes nothing) the
    lock is not taken and nothing is repaired."""
    data_path, out = Path(data_path), Path(out_dir)
    if out.is_symlink():
        out = Path(os.path.realpath(out))
    check_flags(out, resume, overwrite)
    with RunLock(out) if lock else contextlib.nullcontext():
        for event in recover(out) if lock else []:
            if on_event is not None:
                on_event(event)
        check_data(data_path, out, resume)
        if config is None and resume:
            config = saved_config(out)
        return body(data_path, out, config or Config(), resume, overwrite, on_event)


def check_flags(out: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise LstmcastError(f"{out}: --resume continues this run, --overwrite replaces it; pass "
                            f"only one of them")


def check_data(data_path: Path, out: Path, resume: bool) -> None:
    """A train that may clear or replace `out` must not have its own input inside it, and `out`
    must not lie inside another run (whose --overwrite would delete it)."""
    run = enclosing_run(out)
    if run is not None:
        raise LstmcastError(f"{out}: lies inside the run directory {run}; choose an --out outside it")
    if resume or not out.is_dir():
        return
    real, real_out = Path(os.path.realpath(data_path)), Path(os.path.realpath(out))
    if real_out in real.parents:
        raise LstmcastError(f"{data_path}: lies inside the run directory {out}, which this train "
                            f"would replace; move the data out of it or choose another --out")


def _nothing_to_resume(out: Path) -> LstmcastError:
    """Advice that works for each state --resume can find without a last.pt."""
    start = f"{out}: nothing to resume (no {LAST}: no epoch of it finished)"
    if out.is_dir() and os.listdir(out) and not is_run(out):
        return LstmcastError(f"{start}; it is not an lstmcast run directory ({_entries(out)}); "
                             f"choose another --out")
    if out.is_dir() and _started(out):
        return LstmcastError(f"{start}; pass --overwrite instead of --resume to replace it, or "
                             f"choose another --out")
    return LstmcastError(f"{start}; drop --resume to start it")


def prepare(out: Path, resume: bool, overwrite: bool) -> Path:
    """Where this train writes: `out` itself, or (--overwrite of a run) a hidden sibling that
    replaces it at the end. Refuses anything that would lose what is not an lstmcast run."""
    if os.path.lexists(out) and not out.is_dir():
        raise LstmcastError(f"{out}: exists and is not a directory; choose another --out")
    if resume:
        if not (out / LAST).is_file():
            raise _nothing_to_resume(out)
        return out
    if not out.is_dir() or not os.listdir(out):
        return out
    if not is_run(out):
        raise LstmcastError(f"{out}: already exists and is not an lstmcast run directory (it holds "
                            f"{_entries(out)}); --resume and --overwrite only act on runs; "
                            f"refusing to touch it; choose another --out")
    if not _started(out):
        # Killed before its first epoch ended: nothing of value in it, so a plain rerun restarts
        # it (the same command works again, as --resume says).
        _clear(out)
        return out
    if not overwrite:
        what = "pass --resume to continue it, " if (out / LAST).is_file() else ""
        raise LstmcastError(f"{out}: run directory already exists; {what}--overwrite to replace "
                            f"it, or choose another --out")
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def _clear(run: Path) -> None:
    for entry in run.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def create(work: Path) -> bool:
    """Make the run directory (not its parents) and mark it first; True if it was new."""
    fresh = not work.exists()
    try:
        work.mkdir(exist_ok=True)
        if not (work / MARKER).is_file():
            write_marker(work)
    except OSError as exc:
        error = environment_error(exc, work)
        if error is None:
            raise
        if fresh:
            shutil.rmtree(work, ignore_errors=True)
        raise error from None
    return fresh


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the
    OS or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc before 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def finish(work: Path, out: Path) -> None:
    """Swap a finished --overwrite run into place; the replaced run is removed only after that.

    Where the OS can, one atomic exchange: `out` always holds a whole run, the old or the new one.
    Elsewhere two renames, and recover() repairs a kill between them."""
    if work == out:
        return
    if _exchange(work, out):
        # `work` now holds the replaced run; if killed here, the next start removes it.
        shutil.rmtree(work, ignore_errors=True)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.rename(out, old)
    # From here until the next rename there is no `out`; recover() puts `old` back if killed.
    os.rename(work, out)
    shutil.rmtree(old, ignore_errors=True)  # what is left is removed by the next start
