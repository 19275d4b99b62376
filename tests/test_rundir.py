"""The run directory and the output files can be trusted.

--overwrite only ever replaces an lstmcast run; one train per run directory at a time (a lock);
a kill at any step of a replacement leaves a whole run at --out (or one the next start restores);
every state a killed train leaves has a next command that works; no output is ever one of the
command's inputs or inside a run; writes go through symlinks and keep modes; a full disk or a
missing permission is one line and exit 2, with the previous file intact.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import PREFIX, cli, error_line, snapshot

from lstmcast import outputs, rundir
from lstmcast.config import Config, load_config
from lstmcast.train import Step, train

# ---------------------------------------------------------------------------------------------
# Helpers (cli, error_line, snapshot and PREFIX are shared, in conftest.py).

FAST = ["--set", "train.epochs=1", "--horizon", "2", "--set", "model.hidden_size=8",
        "--set", "model.layers=1", "--set", "train.recipe=none"]
RUN_FILES = {".lstmcast-run", "config.yaml", "history.csv", "last.pt", "metrics.json", "model.pt"}








def csv_text(n: int = 12) -> str:
    times = pd.date_range("2020-01-01", periods=n, freq="D")
    return "unique_id,ds,y\n" + "".join(f"{sid},{t.date()},{i + k:g}\n" for sid, k in (("a", 1), ("b", 5))
                                        for i, t in enumerate(times))


def assert_whole_run(run: Path, epochs: int | None = None) -> None:
    assert RUN_FILES <= {p.name for p in run.iterdir()}, sorted(p.name for p in run.iterdir())
    assert json.loads((run / ".lstmcast-run").read_text())["format"] == rundir.MARKER_FORMAT
    if epochs is not None:
        assert pd.read_csv(run / "history.csv")["epoch"].tolist() == list(range(1, epochs + 1))


def siblings(run: Path) -> list[str]:
    """What lies beside the run directory other than itself and the data: leftovers."""
    return sorted(n for n in os.listdir(run.parent) if n not in (run.name, "data.csv"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data CSV, a whole 1-epoch run) shared read-only; copy the run before changing it."""
    folder = tmp_path_factory.mktemp("trained")
    data = folder / "data.csv"
    data.write_text(csv_text())
    run = folder / "run"
    result = cli("train", data, "--out", run, *FAST)
    assert result.exit_code == 0, result.output
    return data, run


@pytest.fixture
def setup(tmp_path, trained):
    """(data, run) in tmp_path: a private copy of the trained run, at tmp_path / 'run'."""
    data, run = tmp_path / "data.csv", tmp_path / "run"
    shutil.copy(trained[0], data)
    shutil.copytree(trained[1], run)
    return data, run


# ---------------------------------------------------------------------------------------------
# The marker: --overwrite replaces only runs


def test_a_new_run_is_marked_and_whole(trained):
    _, run = trained
    assert_whole_run(run, epochs=1)
    assert not (run.parent / ".run.lock").exists(), "the lock file was left behind"


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]], ids=["plain", "overwrite", "resume"])
def test_overwrite_refuses_a_folder_of_runs_and_notes(tmp_path, setup, flags):
    """The empty-shell-variable case: --out runs/$NAME with NAME unset is --out runs/."""
    data, run = setup
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(run, runs / "a")
    shutil.copytree(run, runs / "b")
    (runs / "notes.txt").write_text("keep me\n")
    before = snapshot(tmp_path)
    result = cli("train", data, "--out", f"{runs}/", *FAST, *flags)
    error_line(result, str(runs), "not an lstmcast run directory", "3 entries: a, b, notes.txt",
               "choose another --out")
    assert snapshot(tmp_path) == before, "something under the folder was changed"


def test_overwrite_refuses_a_user_folder_with_a_model_file(tmp_path, setup):
    data, _ = setup
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.pt").write_bytes(b"my own model")  # no config.yaml: not an older run either
    before = snapshot(tmp_path)
    error_line(cli("train", data, "--out", out, "--overwrite", *FAST), "not an lstmcast run directory",
               "1 entry: model.pt")
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_a_run_of_an_older_version_without_marker(setup):
    data, run = setup
    (run / ".lstmcast-run").unlink()  # as written before the marker existed
    result = cli("train", data, "--out", run, "--overwrite", *FAST, "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    assert_whole_run(run, epochs=2)
    assert siblings(run) == []


def test_overwrite_of_a_run_leaves_a_whole_run_and_no_leftovers(setup):
    data, run = setup
    result = cli("train", data, "--out", run, "--overwrite", *FAST, "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    assert_whole_run(run, epochs=2)
    assert siblings(run) == []


def test_resume_and_overwrite_together_are_refused(setup):
    data, run = setup
    before = snapshot(run)
    error_line(cli("train", data, "--out", run, "--resume", "--overwrite", *FAST),
               str(run), "--resume", "--overwrite", "only one")
    assert snapshot(run) == before


def test_train_creates_the_run_directory_but_not_its_parents(tmp_path, setup):
    data, _ = setup
    out = tmp_path / "no" / "such" / "run"
    error_line(cli("train", data, "--out", out, *FAST), str(tmp_path / "no" / "such"),
               "folder does not exist", "create it first")
    assert not (tmp_path / "no").exists()


def test_train_refuses_to_replace_the_folder_that_holds_its_data(setup):
    data, run = setup
    inside = run / "data.csv"
    shutil.copy(data, inside)
    before = snapshot(run)
    error_line(cli("train", inside, "--out", run, "--overwrite", *FAST), "lies inside the run directory")
    assert snapshot(run) == before


def test_train_into_a_symlinked_run_directory_keeps_the_link(tmp_path, setup):
    data, run = setup
    link = tmp_path / "latest"
    link.symlink_to(run, target_is_directory=True)
    result = cli("train", data, "--out", link, "--overwrite", *FAST, "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and Path(os.path.realpath(link)) == run
    assert_whole_run(run, epochs=2)


# ---------------------------------------------------------------------------------------------
# The lock


def test_a_held_lock_stops_a_second_train_at_once(setup):
    data, run = setup
    before = snapshot(run)
    with rundir.RunLock(run):
        info = json.loads((run.parent / ".run.lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        started = time.perf_counter()
        result = cli("train", data, "--out", run, "--overwrite", *FAST)
        assert time.perf_counter() - started < 5
        error_line(result, str(run), "another 'lstmcast train'", f"pid {os.getpid()}",
                   socket.gethostname(), info["started"])
    assert snapshot(run) == before
    assert not (run.parent / ".run.lock").exists()


def test_a_stale_lock_file_of_a_killed_train_does_not_block(setup):
    """kill -9 leaves the lock file but the OS drops the lock: the next train goes ahead."""
    data, run = setup
    (run.parent / ".run.lock").write_text('{"pid": 999999, "host": "gone", "started": "then"}\n')
    result = cli("train", data, "--out", run, "--overwrite", *FAST)
    assert result.exit_code == 0, result.output
    assert siblings(run) == []


def test_lock_race_between_threads_has_exactly_one_winner(tmp_path):
    """flock is per open file: threads of one process contend like processes do."""
    out = tmp_path / "run"
    for _ in range(20):
        barrier, outcomes = threading.Barrier(6), []

        def contend(barrier=barrier, outcomes=outcomes):
            barrier.wait()
            try:
                with rundir.RunLock(out):
                    outcomes.append("won")
                    deadline = time.time() + 10  # hold it until every other thread has tried
                    while len(outcomes) < 6 and time.time() < deadline:
                        time.sleep(0.001)
            except rundir.LstmcastError as exc:
                assert "another 'lstmcast train'" in str(exc)
                outcomes.append("lost")

        threads = [threading.Thread(target=contend) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # The winner holds the lock while all others try: one wins, the others are turned away.
        assert outcomes.count("won") == 1, outcomes
        assert not (tmp_path / ".run.lock").exists()


RACER = """
import os, sys, time
from pathlib import Path
from lstmcast import rundir
from lstmcast.cli import app
folder, who, rounds, data = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
other = "y" if who == "x" else "x"
swap = rundir.finish

def finish_when_the_other_is_done(work, out):
    # However slow the machine, the other racer tries while this one holds the lock (and then
    # the swap runs under the lock too). Without a lock both would swap after 60 s.
    deadline = time.time() + 60
    while not (folder / f"done-{r}-{other}").exists() and time.time() < deadline:
        time.sleep(0.005)
    swap(work, out)

rundir.finish = finish_when_the_other_is_done
for r in range(rounds):
    while not (folder / f"go-{r}").exists():
        time.sleep(0.001)
    started = time.perf_counter()
    try:
        app(["train", data, "--out", str(folder / "run"), "--overwrite", "--quiet", "--set",
             "train.epochs=1", "--horizon", "2", "--set", "model.hidden_size=8", "--set", "model.layers=1",
             "--set", "train.recipe=none"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    took = time.perf_counter() - started
    (folder / f"tmp-{who}").write_text(f"{code} {took}")
    os.replace(folder / f"tmp-{who}", folder / f"done-{r}-{who}")  # whole when seen
"""


def test_two_trains_racing_on_one_directory(tmp_path, setup):
    """Two real processes, 10 rounds of `train --out run --overwrite` started together: each round
    exactly one wins, the other exits 2 at once, and the run left is whole."""
    data, run = setup
    rounds = 10
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    racers = [subprocess.Popen([sys.executable, str(script), str(tmp_path), who, str(rounds), str(data)],
                               env=env, stderr=subprocess.PIPE, text=True) for who in ("x", "y")]
    try:
        for r in range(rounds):
            (tmp_path / f"go-{r}").touch()
            done = [tmp_path / f"done-{r}-{who}" for who in ("x", "y")]
            deadline = time.time() + 120
            while not all(p.exists() for p in done):
                assert time.time() < deadline, "a racer hung"
                assert all(p.poll() is None for p in racers), "a racer died"
                time.sleep(0.01)
            results = [p.read_text().split() for p in done]
            codes = sorted(int(code) for code, _ in results)
            assert codes == [0, 2], (r, results)
            winner = next(float(s) for code, s in results if code == "0")
            loser = next(float(s) for code, s in results if code == "2")
            assert loser < winner, f"the loser waited ({loser:.2f}s vs the winner's {winner:.2f}s)"
            assert_whole_run(run, epochs=1)
            assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [], "leftovers"
    finally:
        for p in racers:
            if p.poll() is None and not (tmp_path / f"done-{rounds - 1}-x").exists():
                p.kill()  # a round failed: the racers would wait for its go forever
            p.wait(timeout=60)
    errors = "".join(p.stderr.read() for p in racers)
    lines = [line for line in errors.splitlines() if line]
    assert len(lines) == rounds and all("another 'lstmcast train' is writing it" in line for line in lines)


# ---------------------------------------------------------------------------------------------
# Crash-safe replacement: a kill at every step of an --overwrite


class Killed(BaseException):
    """Stands for kill -9: nothing of the process runs after it."""


class Crasher:
    """Counts every file-system step that moves or removes things; the k-th one 'kills' the
    process: it does not happen, and no later one does (a dead process cleans nothing up)."""

    def __init__(self, monkeypatch, kill_at: int | None):
        self.calls, self.kill_at, self.dead = 0, kill_at, False
        for owner, name in ((os, "rename"), (os, "replace"), (shutil, "rmtree"), (rundir, "_exchange")):
            monkeypatch.setattr(owner, name, self.wrap(getattr(owner, name)))

    def wrap(self, real):
        def step(*args, **kwargs):
            if self.dead:
                return False
            self.calls += 1
            if self.calls == self.kill_at:
                self.dead = True
                raise Killed
            return real(*args, **kwargs)
        return step


def _tiny(epochs: int = 2) -> Config:
    return load_config(None, {"train.epochs": epochs, "data.horizon": 2, "model.hidden_size": 8,
                              "model.layers": 1, "train.recipe": "none"})


def _is_new(run: Path) -> bool:
    return RUN_FILES <= {p.name for p in run.iterdir()} and \
        pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_a_kill_at_every_step_of_an_overwrite_leaves_a_whole_run(tmp_path, trained, monkeypatch, exchange):
    if not exchange:  # the protocol of macOS, Windows and file systems without the exchange
        monkeypatch.setattr(rundir, "_exchange", lambda a, b: False)
    folder = tmp_path / "w"
    data, run = folder / "data.csv", folder / "run"

    def fresh_old_run():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        shutil.copy(trained[0], data)
        shutil.copytree(trained[1], run)

    fresh_old_run()
    old = snapshot(run)
    with monkeypatch.context() as patch:
        counter = Crasher(patch, kill_at=None)
        train(data, run, _tiny(), overwrite=True)
    steps = counter.calls
    assert steps >= 8  # config, checkpoints, history, metrics, the swap and the cleanup
    states = set()
    for k in range(1, steps + 1):
        fresh_old_run()
        with monkeypatch.context() as patch:
            Crasher(patch, kill_at=k)
            with pytest.raises(Killed):
                train(data, run, _tiny(), overwrite=True)
        if os.path.lexists(run):  # a whole run: the old one untouched, or the new one
            assert snapshot(run) == old or _is_new(run), f"kill at step {k}: a mixed run"
            states.add("old" if snapshot(run) == old else "new")
        else:  # only between the two renames, and only without the exchange
            assert not exchange and any(n.startswith(".run.old-") for n in siblings(run)), k
            states.add("missing")
        # The next start repairs: the same command works and leaves nothing else behind.
        result = cli("train", data, "--out", run, "--overwrite", *FAST, "--set", "train.epochs=2")
        assert result.exit_code == 0, (k, result.output)
        assert_whole_run(run, epochs=2)
        assert siblings(run) == [], (k, siblings(run))
    # Every kind of state was reached, so each was checked (and repaired).
    assert states == ({"old", "new"} if exchange else {"old", "new", "missing"})


def test_the_next_start_restores_a_run_killed_between_the_renames(setup):
    data, run = setup
    old = snapshot(run)
    run.rename(run.parent / ".run.old-424242")
    (run.parent / ".run.partial-424242").mkdir()  # the new run it was about to swap in
    result = cli("train", data, "--out", run, *FAST)  # a plain start: repairs, then refuses
    # What was repaired is reported (progress lines, not errors), then the one error line.
    *report, last = result.stderr.splitlines()
    assert result.exit_code == 2 and last.startswith(PREFIX) and "already exists" in last
    assert [line.split(": ", 1)[1].split(",")[0] for line in report] == [
        "restored the previous run from .run.old-424242 (an --overwrite was killed while swapping)",
        "removed .run.partial-424242"]
    assert snapshot(run) == old
    assert siblings(run) == []


def test_the_next_start_reports_the_leftovers_it_removes(setup):
    data, run = setup
    partial = run.parent / ".run.partial-424242"
    partial.mkdir()
    (partial / "model.pt").write_bytes(b"half")
    result = cli("train", data, "--out", run, "--overwrite", *FAST)
    assert result.exit_code == 0, result.output
    assert "removed .run.partial-424242" in result.stderr
    assert siblings(run) == []


# ---------------------------------------------------------------------------------------------
# Killed trains: every state has a next command that works


def kill_at_first_step(event):
    if isinstance(event, Step):
        raise KeyboardInterrupt


def test_killed_before_epoch_1_a_plain_rerun_works_and_resume_says_so(tmp_path, setup):
    data, _ = setup
    out = tmp_path / "fresh"
    config = _tiny()
    with pytest.raises(KeyboardInterrupt):
        train(data, out, config, on_event=kill_at_first_step)
    assert (out / ".lstmcast-run").is_file() and not (out / "last.pt").exists()
    # --resume: there is nothing to resume, and it says what works instead...
    error_line(cli("train", data, "--out", out, "--resume", *FAST), "nothing to resume", "drop --resume")
    # ...and that works: the run restarts from scratch in place.
    result = cli("train", data, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert_whole_run(out, epochs=1)


def test_killed_with_a_best_model_but_no_last_checkpoint(setup):
    """A kill between writing model.pt and last.pt: --resume cannot, --overwrite can."""
    data, run = setup
    (run / "last.pt").unlink()
    plain = error_line(cli("train", data, "--out", run, *FAST), "already exists", "--overwrite")
    assert "--resume" not in plain
    error_line(cli("train", data, "--out", run, "--resume", *FAST), "nothing to resume",
               "--overwrite instead of --resume")
    result = cli("train", data, "--out", run, "--overwrite", *FAST)
    assert result.exit_code == 0, result.output
    assert_whole_run(run, epochs=1)


def test_killed_after_an_epoch_resume_continues(tmp_path, setup):
    data, _ = setup
    out = tmp_path / "cut"
    config = _tiny()

    def kill_in_epoch_2(event):
        if isinstance(event, Step) and event.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, out, config, on_event=kill_in_epoch_2)
    error_line(cli("train", data, "--out", out, *FAST), "already exists", "--resume")
    result = cli("train", data, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert_whole_run(out, epochs=2)


# ---------------------------------------------------------------------------------------------
# Outputs: never an input, never inside a run


def command_args(command: str, data: Path, run: Path, out: Path) -> list:
    return [command, data, "--model", run, "--out", out]


@pytest.mark.parametrize("command", ["predict", "evaluate", "plot"])
def test_an_output_that_is_the_data_is_refused(tmp_path, setup, command):
    data, run = setup
    before = data.read_bytes()
    target = data
    if command == "plot":  # plot's --out must end in a figure suffix: reach the data via a link
        target = tmp_path / "data.png"
        target.symlink_to(data)
    error_line(cli(*command_args(command, data, run, target)), "is also an input", "choose another --out")
    assert data.read_bytes() == before


def test_predict_output_that_is_the_future_file_or_a_hard_link_is_refused(tmp_path, setup):
    data, run = setup
    future = tmp_path / "future.csv"
    future.write_text("unique_id,ds,price\n")
    before = future.read_bytes()
    error_line(cli("predict", data, "--model", run, "--out", future, "--future", future), "is also an input")
    assert future.read_bytes() == before
    hard = tmp_path / "hard.csv"
    os.link(data, hard)
    error_line(cli("predict", data, "--model", run, "--out", hard), "is also an input")
    assert hard.read_bytes() == data.read_bytes()


@pytest.mark.parametrize("command,name", [("predict", "model.pt"), ("predict", "forecasts.csv"),
                                          ("evaluate", "metrics.json"), ("plot", "figure.png")])
def test_an_output_inside_the_run_directory_is_refused(setup, command, name):
    data, run = setup
    before = snapshot(run)
    error_line(cli(*command_args(command, data, run, run / name)), "lies inside the run directory")
    assert snapshot(run) == before


def test_an_output_inside_another_run_directory_is_refused(tmp_path, setup):
    """Its next --overwrite would delete the file: a run directory holds only what train wrote."""
    data, run = setup
    other = tmp_path / "other"
    shutil.copytree(run, other)
    before = snapshot(other)
    error_line(cli("predict", data, "--model", run, "--out", other / "forecasts.csv"),
               f"lies inside the run directory {other}")
    error_line(cli("train", data, "--out", other / "nested", *FAST), f"lies inside the run directory {other}")
    assert snapshot(other) == before


def test_plot_history_inside_the_run_directory_is_refused(setup):
    _, run = setup
    before = snapshot(run)
    error_line(cli("plot-history", run, "--out", run / "history.png"), "lies inside the run directory")
    assert snapshot(run) == before


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_missing_output_folder_is_an_error(tmp_path, setup, command):
    data, run = setup
    out = tmp_path / "no" / "such" / "out.csv"
    error_line(cli(*command_args(command, data, run, out)), str(tmp_path / "no" / "such"),
               "folder does not exist", "create it first")
    assert not (tmp_path / "no").exists()


# ---------------------------------------------------------------------------------------------
# Outputs: through symlinks, keeping modes


def test_an_output_symlink_stays_and_its_target_is_replaced(tmp_path, setup):
    data, run = setup
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / "forecasts.csv"
    target.write_text("old\n")
    target.chmod(0o640)
    link = tmp_path / "forecasts.csv"
    link.symlink_to(target)
    result = cli("predict", data, "--model", run, "--out", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("unique_id,ds,forecast\na,2020-01-13,")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(shared)) == ["forecasts.csv"], "a temp file was left"


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o664])
def test_a_replaced_output_keeps_its_mode(tmp_path, setup, mode):
    data, run = setup
    out = tmp_path / "forecasts.csv"
    out.write_text("old\n")
    out.chmod(mode)
    assert cli("predict", data, "--model", run, "--out", out).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == mode and out.read_text() != "old\n"


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_output_gets_its_mode_from_the_umask(tmp_path, setup, umask, mode):
    data, run = setup
    out = tmp_path / "forecasts.csv"
    old = os.umask(umask)
    try:
        result = cli("predict", data, "--model", run, "--out", out)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == mode


# ---------------------------------------------------------------------------------------------
# The environment: full disk, no permission, read-only file system


def fail_fsync(monkeypatch, code: int):
    def fsync(fd):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(outputs.os, "fsync", fsync)


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EACCES, "permission denied"),
                                        (errno.EROFS, "read-only file system"),
                                        (errno.EDQUOT, "disk quota exceeded")])
def test_a_failing_output_write_is_one_line_and_keeps_the_old_file(tmp_path, setup, monkeypatch, code, words):
    data, run = setup
    out = tmp_path / "forecasts.csv"
    out.write_text("yesterday\n")
    fail_fsync(monkeypatch, code)
    error_line(cli("predict", data, "--model", run, "--out", out), f"{words} writing {out}",
               "nothing was changed")
    assert out.read_text() == "yesterday\n"
    assert sorted(os.listdir(tmp_path)) == ["data.csv", "forecasts.csv", "run"], "a temp file was left"


def test_a_full_disk_while_training_a_new_run_leaves_nothing(tmp_path, setup, monkeypatch):
    data, _ = setup
    out = tmp_path / "new"
    fail_fsync(monkeypatch, errno.ENOSPC)
    error_line(cli("train", data, "--out", out, *FAST), "no space left on device writing", "nothing was changed")
    assert not out.exists() and siblings(out) == ["run"]


def test_a_full_disk_during_an_overwrite_keeps_the_previous_run(setup, monkeypatch):
    data, run = setup
    before = snapshot(run)
    fail_fsync(monkeypatch, errno.ENOSPC)
    error_line(cli("train", data, "--out", run, "--overwrite", *FAST), "no space left on device")
    assert snapshot(run) == before
    assert siblings(run) == []


def test_an_unwritable_folder_as_root_via_monkeypatch(tmp_path, setup, monkeypatch):
    """chmod does not stop root: the same path, with the OS refusing the temp file."""
    data, run = setup

    def mkstemp(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(outputs.tempfile, "mkstemp", mkstemp)
    error_line(cli("evaluate", data, "--model", run, "--out", tmp_path / "m.json"),
               "permission denied writing", "fix the folder's permissions")
    assert not (tmp_path / "m.json").exists()


def test_an_unwritable_parent_for_train_via_monkeypatch(tmp_path, setup, monkeypatch):
    data, _ = setup
    real_open = os.open

    def refuse_lock(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(rundir.os, "open", refuse_lock)
    error_line(cli("train", data, "--out", tmp_path / "new", *FAST), "permission denied writing")
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through chmod")
def test_an_unwritable_folder_with_chmod(tmp_path, setup):
    data, run = setup
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        error_line(cli("predict", data, "--model", run, "--out", locked / "f.csv"), "permission denied")
        error_line(cli("train", data, "--out", locked / "run", *FAST), "permission denied")
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)
