"""A predict killed by SIGTERM (cron's timeout, a scheduler) halfway through its streamed
output: exit 143, no temporary file left beside the output, the previous output unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import SALES, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sigterm_during_predict_leaves_the_old_output_and_no_temporary_file(tmp_path):
    run = tmp_path / "run"
    trained = run_cli("train", SALES, "--out", run, "--horizon", 6, "--set", "model.hidden_size=8",
                      "--set", "model.layers=1", "--set", "train.epochs=1")
    assert trained.exit_code == 0, trained.stderr
    sales = pd.read_csv(SALES)
    many = pd.concat([sales.assign(unique_id=sales["unique_id"] + f"_{k:04d}") for k in range(400)])
    many.to_csv(tmp_path / "many.csv", index=False)                       # 4,800 series
    out = tmp_path / "out.csv"
    out.write_text("yesterday's forecasts\n")
    child = subprocess.Popen([sys.executable, "-m", "lstmcast", "predict", str(tmp_path / "many.csv"),
                              "--model", str(run), "--out", str(out), "--chunk-series", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):  # the output is being written
        assert child.poll() is None, "predict ended before it was killed: give it more series"
        assert time.monotonic() < deadline, "no temporary output appeared"
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.csv", "out.csv", "run"]
    assert out.read_text() == "yesterday's forecasts\n"
