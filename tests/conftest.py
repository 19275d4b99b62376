"""Shared fixtures: the real CLI, run in-process, on the bundled sample data."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lstmcast.cli import app

ROOT = Path(__file__).resolve().parents[1]
SALES = ROOT / "sample_data" / "sales_monthly.csv"
LOAD_WIDE = ROOT / "sample_data" / "load_hourly_wide.csv"
# Small and fast: enough to exercise every path, not to forecast well.
TINY = ["--set", "model.hidden_size=8", "--set", "model.layers=1", "--set", "train.batch_size=128"]


PREFIX = "lstmcast: error: "


@pytest.fixture
def one_thread():
    """Tiny tensors: a second thread only adds contention (the suite shares 2 cores) and changes the
    reduction order. torch.set_num_threads is process-global, so it is restored. Used by a module
    with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The suite exercises every feature on the plain declared defaults (train.recipe none), chosen key
# by key as each test says; the automatic recipe, the default for users, has its own tests
# (test_auto.py, test_auto_cli.py), which say train.recipe themselves.
PLAIN = ["--set", "train.recipe=none"]


def run_cli(*args) -> object:
    """Invoke the CLI; the result has exit_code, stdout and stderr (kept apart). `train` runs the
    plain recipe unless the arguments name train.recipe (see PLAIN)."""
    args = [str(a) for a in args]
    if args and args[0] == "train" and not any("train.recipe" in a for a in args):
        args += PLAIN
    return CliRunner().invoke(app, args)


cli = run_cli


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under folder -> its bytes (None for directories)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def error_line(result, *fragments: str) -> str:
    """Assert a clean user error (exit 2, one stderr line starting with PREFIX and holding every
    fragment, no traceback, nothing on stdout); return that line."""
    unexpected = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not unexpected, f"crashed with {result.exception!r} (a traceback for the user)"
    assert "Traceback" not in result.output
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {result.stderr!r}"
    line = lines[0]
    assert line.startswith(PREFIX), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} missing from: {line}"
    assert result.stdout == ""
    return line


@pytest.fixture(scope="session")
def sales_run(tmp_path_factory) -> Path:
    """One small trained run on the monthly sample, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("runs") / "sales"
    result = run_cli("train", SALES, "--out", out, "--set", "train.epochs=3", *TINY)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def quantile_run(tmp_path_factory) -> Path:
    """One small run forecasting quantiles 0.1, 0.5, 0.9 on the monthly sample (read-only tests)."""
    out = tmp_path_factory.mktemp("runs") / "q"
    result = run_cli("train", SALES, "--out", out, "--set", "train.epochs=1", "--quantiles", "0.1,0.5,0.9", *TINY)
    assert result.exit_code == 0, result.stderr
    return out
