"""CUDA path: training on the GPU with bf16 autocast, and GPU runs predicting on the CPU.

Marked `gpu`; skipped cleanly where CUDA is not available (CI has none).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SALES, TINY, run_cli

from lstmcast.device import autocast_dtype, resolve_device

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_auto_device_picks_cuda_with_bf16():
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert autocast_dtype("auto", device) == torch.bfloat16


def test_train_on_gpu_predict_on_cpu_and_gpu(tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", SALES, "--out", run, "--device", "cuda", "--set", "train.epochs=3", *TINY)
    assert result.exit_code == 0, result.stderr
    assert "device cuda" in result.stderr and "precision bf16" in result.stderr
    payload = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in payload["models"][0].values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda")
    assert all(np.isfinite(v) for v in metrics["validation"]["model"].values())
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.csv"
        done = run_cli("predict", SALES, "--model", run, "--out", out, "--device", device)
        assert done.exit_code == 0, done.stderr
    cpu, gpu = pd.read_csv(tmp_path / "cpu.csv"), pd.read_csv(tmp_path / "cuda.csv")
    assert len(cpu) == len(gpu) == 144
    # The CPU runs fp32, the GPU bf16 autocast: close, not identical.
    np.testing.assert_allclose(cpu["forecast"], gpu["forecast"], rtol=0.05, atol=1.0)


def test_fp32_on_gpu_matches_cpu_forward(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", SALES, "--out", run, "--set", "train.epochs=1", "--set",
                   "train.precision=fp32", *TINY).exit_code == 0
    from lstmcast.predict import forecast, load_run, read_for_run
    cpu_run, gpu_run = load_run(run, "cpu"), load_run(run, "cuda")
    series = read_for_run(cpu_run, SALES)
    np.testing.assert_allclose(forecast(cpu_run, series), forecast(gpu_run, series), rtol=1e-4, atol=1e-3)
