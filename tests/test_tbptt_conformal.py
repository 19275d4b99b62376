"""Conformal intervals for stateful runs (train.tbptt + model.conformal): calibrated on the
calibration windows from the state over each series' history, applied by predict and evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SALES, run_cli

from lstmcast.predict import forecast, load_run, read_for_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stateful_runs_calibrate_and_apply_their_intervals(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train", SALES, "--out", run_dir, "--horizon", 6, "--set", "train.tbptt=16",
                     "--set", "model.hidden_size=8", "--set", "model.layers=1", "--set", "train.epochs=3",
                     "--quantiles", "0.1,0.5,0.9", "--set", "model.conformal=true")
    assert result.exit_code == 0, result.stderr
    conformal = json.loads((run_dir / "metrics.json").read_text())["conformal"]
    assert conformal["n_calibration"] == 12 and conformal["names"] == ["0.1-0.9"]
    assert len(conformal["corrections"][0]) == 6

    run = load_run(run_dir)
    series = read_for_run(run, SALES)
    corrected = forecast(run, series)
    run.model.corrections = None
    raw = forecast(run, series)
    np.testing.assert_array_equal(corrected[..., 1], raw[..., 1])          # the median stays
    widened = (corrected[..., 2] - corrected[..., 0]) - (raw[..., 2] - raw[..., 0])
    assert not np.allclose(widened, 0)                                      # the corrections are applied

    # Scored on the windows they were calibrated on, the intervals cover their nominal share.
    result = run_cli("evaluate", SALES, "--model", run_dir, "--out", tmp_path / "m.json")
    assert result.exit_code == 0, result.stderr
    intervals = json.loads((tmp_path / "m.json").read_text())["intervals"]["0.1-0.9"]
    assert intervals["coverage"] >= intervals["nominal"] == 0.8
