"""Precision choice, the TF32 policy, loud fallbacks and CPU-only checkpoints, on the CPU.

The CUDA side of the same contracts is in test_gpu.py (run by `make gpu-check`); here the
decisions are tested with the bf16 probe's answer forced, which needs no GPU.
"""

from __future__ import annotations

import importlib
import json
import pickle
import zipfile

import pytest
import torch
from conftest import SALES, TINY, run_cli

from lstmcast import cells, precision
from lstmcast.checkpoint import on_cpu, save_checkpoint
from lstmcast.device import clear_fallbacks, fallbacks, record_fallback
from lstmcast.errors import LstmcastError
from lstmcast.precision import autocast_dtype, forecast_autocast, fp32_math, tf32_state

CUDA = torch.device("cuda")   # only its .type is read when the probe's answer is forced
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_fallbacks_before():
    clear_fallbacks()
    yield
    clear_fallbacks()


def probe_says(monkeypatch, answers: dict):
    monkeypatch.setattr(precision, "bf16_kernel", lambda cell, device: answers[cell])


def test_auto_is_fp32_on_a_cpu_and_bf16_only_where_asked():
    assert autocast_dtype("auto", CPU) is None
    assert autocast_dtype("fp32", CPU) is None and autocast_dtype("tf32", CPU) is None
    assert autocast_dtype("bf16", CPU) == torch.bfloat16
    with pytest.raises(LstmcastError, match="choose one of auto, bf16, fp32, tf32"):
        autocast_dtype("fp16", CPU)


def test_auto_on_cuda_takes_bf16_only_when_every_cell_in_use_has_it(monkeypatch, capsys):
    probe_says(monkeypatch, {"lstm": (True, "cuDNN bf16"), "peephole": (False, "no Triton")})
    assert autocast_dtype("auto", CUDA, ("lstm",)) == torch.bfloat16
    assert fallbacks() == {}
    assert autocast_dtype("auto", CUDA, ("lstm", "peephole")) is None
    assert "cell peephole: no Triton" in fallbacks()["bf16"]
    # said once on stderr, with the reason
    err = capsys.readouterr().err
    assert err.count("lstmcast: warning: bf16 fast path not used: cell peephole: no Triton") == 1


def test_auto_on_cuda_takes_bf16_only_for_members_where_it_pays(monkeypatch):
    """bf16 was 3-6x slower than fp32 for small cuDNN RNNs on an H200 (no persistent bf16 kernel)
    and no faster for the custom cells: auto keeps fp32 there, with no probe and no fallback."""
    probed = []
    probe_says(monkeypatch, {"lstm": (True, "cuDNN bf16"), "gru": (True, "cuDNN bf16"),
                             "peephole": (True, "Triton bf16")})
    real = precision.bf16_kernel
    monkeypatch.setattr(precision, "bf16_kernel", lambda cell, device: probed.append(cell) or real(cell, device))
    assert precision.bf16_pays("lstm", 192, 1024) and precision.bf16_pays("gru", 256, 4096)
    assert not precision.bf16_pays("lstm", 128, 1024) and not precision.bf16_pays("lstm", 256, 512)
    assert not precision.bf16_pays("peephole", 512, 4096)
    small = [("lstm", 64, 256)]
    assert autocast_dtype("auto", CUDA, ("lstm",), small) is None and probed == []
    assert autocast_dtype("auto", CUDA, ("lstm",), [("lstm", 256, 1024)]) == torch.bfloat16 and probed == ["lstm"]
    assert autocast_dtype("auto", CUDA, ("gru", "lstm"), [("gru", 256, 1024), ("lstm", 64, 1024)]) is None
    assert autocast_dtype("bf16", CUDA, ("lstm",), small) == torch.bfloat16   # asked for: given
    assert forecast_autocast("auto", CUDA, ("lstm",), small) is None
    assert fallbacks() == {}
    from lstmcast.config import load_config
    config = load_config(None, {"model.hidden_size": 200, "train.batch_size": 1024, "train.ensemble": 2,
                                "train.members": [{"model.cell": "gru"}, {"model.hidden_size": 64}]})
    assert config.member_shapes() == (("gru", 200, 1024), ("lstm", 64, 1024))


def test_explicit_bf16_without_a_fast_path_is_a_user_error(monkeypatch):
    probe_says(monkeypatch, {"lstm": (False, "no cuDNN RNN under bf16 (torch's per-step path, output bfloat16)")})
    with pytest.raises(LstmcastError, match="train.precision=bf16: no fast bf16 path on this GPU.*per-step"):
        autocast_dtype("bf16", CUDA, ("lstm",))


def test_forecasting_on_a_cpu_is_fp32_whatever_the_run_was_trained_in(monkeypatch):
    probe_says(monkeypatch, {"lstm": (True, "cuDNN bf16")})
    assert forecast_autocast("bf16", CPU, ("lstm",)) is None
    assert forecast_autocast("auto", CPU, ("lstm",)) is None
    assert forecast_autocast("bf16", CUDA, ("lstm",)) == torch.bfloat16


def test_a_bf16_run_forecasts_in_fp32_on_the_cpu(tmp_path, monkeypatch):
    run = tmp_path / "run"
    result = run_cli("train", SALES, "--out", run, "--set", "train.epochs=1", "--set", "train.precision=bf16", *TINY)
    assert result.exit_code == 0, result.stderr
    assert "precision bf16" in result.stderr
    predict_module = importlib.import_module("lstmcast.predict")  # the package exports predict()
    seen = []
    real = predict_module.forecast_windows
    monkeypatch.setattr(predict_module, "forecast_windows",
                        lambda model, inputs, starts, runtime, **options: seen.append(runtime.autocast)
                        or real(model, inputs, starts, runtime, **options))   # options: predict's fixed batches
    done = run_cli("predict", SALES, "--model", run, "--out", tmp_path / "f.csv")
    assert done.exit_code == 0, done.stderr
    assert seen == [None]


def test_fp32_math_turns_tf32_off_and_tf32_on_and_restores():
    before = tf32_state()
    with fp32_math("fp32"):
        assert tf32_state() == {"matmul": False, "cudnn_rnn": False}
    with fp32_math("auto"):
        assert tf32_state() == {"matmul": False, "cudnn_rnn": False}
    with fp32_math("tf32"):
        assert tf32_state() == {"matmul": True, "cudnn_rnn": True}
    assert tf32_state() == before


def test_a_cpu_run_records_its_arithmetic_and_no_fallback(tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", SALES, "--out", run, "--set", "train.epochs=1", "--set", "model.cell=peephole", *TINY)
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "fp32"
    assert metrics["fallbacks"] == {}
    assert "tf32" not in metrics and "kernels" not in metrics     # CUDA only
    # (a 1-epoch model may warn that it loses to seasonal naive; no fallback warning)
    assert "fast path not used" not in result.stderr
    assert all("worse than seasonal naive" in line for line in result.stderr.splitlines() if "warning" in line)


# ----------------------------------------------------------------------------------------------
# Fallbacks are loud


def test_a_failing_triton_kernel_is_said_recorded_and_the_numbers_still_right(monkeypatch, capsys):
    monkeypatch.setattr(cells, "use_triton", lambda tensor: True)
    monkeypatch.setattr(cells, "USE_TRITON", True)

    def broken(*args):
        raise RuntimeError("PTX too new for this driver\nsecond line")

    monkeypatch.setattr(cells, "triton_layer_forward", broken)
    torch.manual_seed(0)
    encoder = cells.RecurrentEncoder("cifg", 3, 5)
    x = torch.randn(2, 4, 3)
    got, _ = encoder(x)
    want, _ = encoder.reference_forward(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert fallbacks()["triton"].startswith("the Triton LSTM kernel failed (RuntimeError: PTX too new for this "
                                            "driver); using the TorchScript loop")
    encoder(x)                                       # a second failure is not said again
    err = capsys.readouterr().err
    assert err.count("lstmcast: warning: triton fast path not used") == 1
    assert cells.USE_TRITON is False


def test_scripting_that_fails_is_said_and_recorded(monkeypatch, capsys):
    def cannot(fn):
        raise RuntimeError("unsupported construct")

    monkeypatch.setattr(torch.jit, "script", cannot)
    monkeypatch.setattr(cells, "_COMPILED", {})

    def twice(x):
        return 2 * x

    assert cells.compiled(twice) is twice
    assert "scripting twice failed (RuntimeError: unsupported construct)" in fallbacks()["torchscript"]
    assert "torchscript fast path not used" in capsys.readouterr().err


def test_the_torchscript_fast_path_really_is_scripted():
    """The CPU fast path of the custom cells: scripted loops, no fallback, same numbers."""
    for fn in (cells.lstm_layer_forward, cells.lstm_layer_backward):
        assert isinstance(cells.compiled(fn), torch.jit.ScriptFunction)
    encoder = cells.RecurrentEncoder("peephole", 3, 6, layers=2)
    x = torch.randn(4, 5, 3, requires_grad=True)
    out, _ = encoder(x)
    out.sum().backward()
    assert fallbacks() == {}


def test_record_fallback_keeps_the_first_reason():
    record_fallback("x", "first")
    record_fallback("x", "second")
    assert fallbacks() == {"x": "first"}


# ----------------------------------------------------------------------------------------------
# Checkpoints hold CPU tensors only


def storage_locations(path) -> set[str]:
    """The device each tensor storage in a torch.save file was written from (read from the file
    itself, without loading any tensor)."""
    locations = set()

    class Reader(pickle.Unpickler):
        def find_class(self, module, name):
            if module.startswith("torch"):
                return lambda *args, **kwargs: None
            return super().find_class(module, name)

        def persistent_load(self, pid):  # ('storage', storage_type, key, location, numel)
            locations.add(pid[3])

    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        Reader(archive.open(name)).load()
    return locations


def test_a_run_checkpoint_holds_cpu_storages_only(sales_run):
    for name in ("model.pt", "last.pt"):
        assert storage_locations(sales_run / name) == {"cpu"}
        torch.load(sales_run / name, weights_only=True)          # no map_location needed


class FakeGpuTensor(torch.Tensor):
    """Reports itself on a GPU until .cpu() is called (what save_checkpoint must do)."""

    moved = 0

    def cpu(self, *args, **kwargs):
        FakeGpuTensor.moved += 1
        return self.as_subclass(torch.Tensor).clone()


def test_save_checkpoint_moves_every_nested_tensor_to_the_cpu(tmp_path):
    weights = torch.ones(3, requires_grad=True)
    payload = {"models": [{"w": weights * 2}], "pair": (torch.zeros(2),), "n": 3}
    moved = on_cpu(payload)
    assert not moved["models"][0]["w"].requires_grad
    assert isinstance(moved["pair"], tuple) and moved["n"] == 3
    fake = torch.arange(4.0).as_subclass(FakeGpuTensor)
    FakeGpuTensor.moved = 0
    save_checkpoint({"models": [{"w": fake}], "nested": {"deep": [fake]}}, tmp_path / "m.pt")
    assert FakeGpuTensor.moved == 2
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)
    assert type(loaded["models"][0]["w"]) is torch.Tensor
    assert loaded["nested"]["deep"][0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_the_probe_keeps_the_profilers_own_warning_to_itself(monkeypatch):
    """torch 2.11's profiler warns "Profiler clears events at the end of each cycle" when the probe
    profiles a second cell; on the H200 that reached users as "lstmcast: warning: ... please report
    it". Raised here as an error if it escapes."""
    import warnings

    from torch.profiler import profile
    enter = profile.__enter__

    def noisy(self):
        warnings.warn("Warning: Profiler clears events at the end of each cycle.", UserWarning, stacklevel=2)
        return enter(self)

    monkeypatch.setattr(profile, "__enter__", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = precision._op_names(lambda: torch.ones(2).add_(1))
    assert any("add" in name for name in names)
