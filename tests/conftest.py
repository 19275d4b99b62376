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


def run_cli(*args) -> object:
    """Invoke the CLI; the result has exit_code, stdout and stderr (kept apart)."""
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def sales_run(tmp_path_factory) -> Path:
    """One small trained run on the monthly sample, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("runs") / "sales"
    result = run_cli("train", SALES, "--out", out, "--set", "train.epochs=3", *TINY)
    assert result.exit_code == 0, result.stderr
    return out
