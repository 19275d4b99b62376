"""CUDA path: bf16 that is really cuDNN bf16, IEEE fp32 that matches the CPU, GPU runs that load
and forecast on a machine without a GPU, and fast paths that do not fall back.

Marked `gpu`; skipped cleanly where CUDA is not available (CI has none). `make gpu-check` runs them.
The comparisons are made on the model's own correction (forecast minus the last observed value,
which every forecast starts from), so a broken head on the GPU cannot hide under the level of
the series.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SALES, TINY, run_cli

from lstmcast.device import clear_fallbacks, fallbacks, resolve_device
from lstmcast.precision import _op_names, autocast_dtype, bf16_kernel

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

LOADS_WITHOUT_GPU = """
import sys, torch
assert not torch.cuda.is_available()
payload = torch.load(sys.argv[1], weights_only=True)   # no map_location: every tensor must be CPU
def walk(v):
    if isinstance(v, torch.Tensor): yield v
    elif isinstance(v, dict): yield from (t for x in v.values() for t in walk(x))
    elif isinstance(v, (list, tuple)): yield from (t for x in v for t in walk(x))
assert {t.device.type for t in walk(payload)} == {"cpu"}
print("ok")
"""


def corrections(frame: pd.DataFrame) -> np.ndarray:
    """forecast - last observed value of its series: what the model itself adds."""
    last = pd.read_csv(SALES).groupby("unique_id")["y"].last()
    return frame["forecast"].to_numpy() - frame["unique_id"].map(last).to_numpy()


def test_the_profiler_sees_cudnn_rnn_so_the_bf16_probe_can():
    """The probe decides by whether aten::_cudnn_rnn ran: in fp32 it must, or the probe is blind."""
    lstm = torch.nn.LSTM(2, 8, batch_first=True).cuda()
    names = _op_names(lambda: lstm(torch.randn(3, 4, 2, device="cuda"))[0].sum().backward())
    assert any("_cudnn_rnn" in name for name in names), sorted(names)


def test_auto_precision_is_bf16_exactly_when_every_cell_runs_fast_bf16():
    device = resolve_device("auto")
    assert device.type == "cuda"
    for cell in ("lstm", "gru", "peephole", "cifg"):
        clear_fallbacks()
        ok, what = bf16_kernel(cell, device)
        chosen = autocast_dtype("auto", device, (cell,))
        assert chosen == (torch.bfloat16 if ok else None), (cell, what)
        assert ("bf16" in fallbacks()) == (not ok)
        if cell in ("lstm", "gru") and torch.cuda.is_bf16_supported():
            # TorchLSTM / TorchGRU hand cuDNN bf16 themselves (autocast alone would run fp16)
            assert (ok, what) == (True, "cuDNN bf16"), (cell, what)
    # The Triton kernel runs the custom cells on CUDA: no fallback allowed there.
    assert bf16_kernel("peephole", device) == (True, "Triton bf16")
    assert bf16_kernel("cifg", device) == (True, "Triton bf16")


def test_train_on_gpu_predict_on_cpu_without_a_gpu(tmp_path):
    clear_fallbacks()
    run = tmp_path / "run"
    # bf16 asked for (auto takes fp32 for a model this small): the harder case for the CPU
    result = run_cli("train", SALES, "--out", run, "--device", "cuda", "--set", "train.epochs=8",
                     "--set", "model.hidden_size=32", "--set", "train.batch_size=64", "--set", "train.precision=bf16")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    bf16 = True
    assert metrics["precision"] == "bf16" and metrics["kernels"] == {"lstm": "cuDNN bf16"}
    assert "precision bf16" in result.stderr
    assert metrics["device"].startswith("cuda")
    assert metrics["fallbacks"] == {}
    assert metrics["tf32"] == {"matmul": False, "cudnn_rnn": False}
    no_gpu = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    for name in ("model.pt", "last.pt"):
        loaded = subprocess.run([sys.executable, "-c", LOADS_WITHOUT_GPU, str(run / name)], env=no_gpu,
                                capture_output=True, text=True, timeout=120)
        assert loaded.returncode == 0 and loaded.stdout.strip() == "ok", loaded.stderr
    for device in ("cpu", "cuda"):
        done = run_cli("predict", SALES, "--model", run, "--out", tmp_path / f"{device}.csv", "--device", device)
        assert done.exit_code == 0, done.stderr
    cpu, gpu = pd.read_csv(tmp_path / "cpu.csv"), pd.read_csv(tmp_path / "cuda.csv")
    assert len(cpu) == len(gpu) == 144
    cpu_fix, gpu_fix = corrections(cpu), corrections(gpu)
    scale = np.abs(cpu_fix).mean()
    assert scale > 0.01 * pd.read_csv(SALES)["y"].abs().mean()   # the head does real work here
    # The CPU forecasts in fp32, the GPU in bf16 autocast: close on the correction, not identical.
    assert np.abs(cpu_fix - gpu_fix).max() < (0.1 if bf16 else 1e-4) * scale


def test_auto_trains_a_small_model_in_fp32_and_a_large_one_in_bf16(tmp_path):
    """auto: bf16 only where it pays on a GPU (precision.bf16_pays), never a fallback."""
    clear_fallbacks()
    for hidden, batch, expected in ((32, 64, "fp32"), (192, 1024, "bf16")):
        run = tmp_path / f"run{hidden}"
        result = run_cli("train", SALES, "--out", run, "--device", "cuda", "--set", "train.epochs=1",
                         "--set", "train.ensemble=1", "--set", "train.members=null",
                         "--set", f"model.hidden_size={hidden}", "--set", f"train.batch_size={batch}")
        assert result.exit_code == 0, result.stderr
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["precision"] == expected and metrics["fallbacks"] == {}


def test_fp32_on_gpu_is_ieee_and_matches_the_cpu(tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", SALES, "--out", run, "--set", "train.epochs=2", "--set", "train.precision=fp32",
                     "--device", "cuda", *TINY)
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "fp32" and metrics["tf32"] == {"matmul": False, "cudnn_rnn": False}
    from lstmcast.predict import forecast, load_run, read_for_run
    cpu_run, gpu_run = load_run(run, "cpu"), load_run(run, "cuda")
    series = read_for_run(cpu_run, SALES)
    cpu, gpu = forecast(cpu_run, series), forecast(gpu_run, series)
    last = np.array([v[-1] for v in series.values])[:, None]
    scale = np.abs(cpu - last).mean()
    assert scale > 0
    np.testing.assert_allclose(gpu - last, cpu - last, rtol=0, atol=1e-5 * scale + 1e-6 * np.abs(last).max())



@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cudnn_rnn_trains_in_real_bf16_near_fp32(cell):
    """Under bf16 autocast TorchLSTM / TorchGRU run cuDNN's fused RNN in bf16 (not torch's fp16
    cast): bf16 output from aten::_cudnn_rnn, near the IEEE fp32 output, fp32 gradients near fp32's."""
    from lstmcast.cells import make_encoder
    from lstmcast.precision import fp32_math
    torch.manual_seed(0)
    encoder = make_encoder(cell, 3, 32, layers=2).cuda()
    x = torch.randn(64, 30, 3, device="cuda")
    with fp32_math("fp32"):
        want = encoder(x)[0]
        want_grads = torch.autograd.grad(want.sum(), list(encoder.parameters()))
    seen = {}

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = encoder(x)[0]
        seen["out"] = out
        seen["grads"] = torch.autograd.grad(out.float().sum(), list(encoder.parameters()))

    assert any("_cudnn_rnn" in name for name in _op_names(step))
    got, grads = seen["out"], seen["grads"]
    assert got.dtype == torch.bfloat16
    assert 0 < (got.float() - want).abs().max().item() < 0.03
    for g, w in zip(grads, want_grads, strict=True):
        assert g.dtype == torch.float32 and (g - w).norm() <= 0.05 * w.norm() + 1e-3


def test_a_host_buffer_trains_through_pinned_memory_like_a_device_buffer(tmp_path, monkeypatch):
    """train.buffer host on CUDA: each batch is gathered into pinned host memory and copied
    asynchronously (spied), and the run forecasts what the same run from a device buffer does."""
    from lstmcast.windows import SeriesBuffer

    pinned = []
    staging = SeriesBuffer._staging

    def spy(self, shape, dtype):
        out = staging(self, shape, dtype)
        pinned.append(out.is_pinned())
        return out

    monkeypatch.setattr(SeriesBuffer, "_staging", spy)
    forecasts = {}
    for buffer in ("device", "host"):
        pinned.clear()
        run = tmp_path / buffer
        result = run_cli("train", SALES, "--out", run, "--device", "cuda", "--set", "train.epochs=3",
                         "--set", "train.precision=fp32", "--set", f"train.buffer={buffer}", *TINY)
        assert result.exit_code == 0, result.stderr
        assert (len(pinned) > 3 and all(pinned)) if buffer == "host" else not pinned
        done = run_cli("predict", SALES, "--model", run, "--out", tmp_path / f"{buffer}.csv", "--device", "cuda")
        assert done.exit_code == 0, done.stderr
        forecasts[buffer] = corrections(pd.read_csv(tmp_path / f"{buffer}.csv"))
    scale = np.abs(forecasts["device"]).mean()
    assert scale > 0
    np.testing.assert_allclose(forecasts["host"], forecasts["device"], rtol=0, atol=1e-4 * scale)
