"""The series buffer in host memory (train.buffer host, or auto when it would take over half of a
GPU's free memory): windows gathered on the host and sent to the device give the same numbers as
a buffer on the device; the choice is said once; a stateful model refuses it. And the training
step's own op count: lstmcast's step adds only a few ops to a bare nn.LSTM step (the window
gather, the naive correction, the loss sum), none that a constant per step would cost."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from conftest import SALES, TINY, error_line, run_cli
from torch.utils._python_dispatch import TorchDispatchMode

from lstmcast import windows
from lstmcast.config import load_config
from lstmcast.epoch import Batches, run_epoch
from lstmcast.fitstate import make_optimizer
from lstmcast.losses import make_loss
from lstmcast.model import Forecaster
from lstmcast.runtime import Runtime
from lstmcast.windows import SeriesBuffer, place

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def series_set(n=5, seed=0):
    rng = np.random.default_rng(seed)
    scaled = [rng.standard_normal(int(rng.integers(30, 60))).astype(np.float32) for _ in range(n)]
    extra = [rng.standard_normal((len(s), 3)).astype(np.float32) for s in scaled]
    tail = [rng.standard_normal((4, 3)).astype(np.float32) for _ in scaled]
    return scaled, extra, tail


def both(**kwargs):
    scaled, extra, tail = series_set()
    args = dict(extra=extra, tail=tail, n_known=2, horizon=4, codes=np.arange(5) * 3)
    args.update(kwargs)
    return (SeriesBuffer.build(scaled, 12, CPU, **args), SeriesBuffer.build(scaled, 12, CPU, host=True, **args))


def test_a_host_buffer_gathers_the_same_windows():
    device, host = both()
    assert device.compute is None and host.compute == CPU and host.device == CPU
    starts = device.training_starts(device.lengths - 4, 4)
    assert len(starts) > 100
    torch.testing.assert_close(host.training_starts(host.lengths - 4, 4), starts, rtol=0, atol=0)
    for a, b in zip(device.windows(starts, 4), host.windows(starts, 4)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(device.model_inputs(starts), host.model_inputs(starts)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert host.model_inputs(starts)[1].shape == (len(starts), 4, 2)
    assert host.series(starts).dtype == torch.int64


def test_the_window_offsets_are_made_once_per_buffer():
    buffer, _ = both()
    starts = buffer.training_starts(buffer.lengths - 4, 4)
    buffer.windows(starts[:8], 4)
    first = buffer.steps(16, CPU)
    buffer.windows(starts[8:16], 4)
    assert buffer.steps(16, CPU) is first and torch.equal(first, torch.arange(16))


def test_place_rules(monkeypatch):
    assert place("host", CPU, 10) == (True, "train.buffer host")
    assert place("device", CPU, 10)[0] is False
    assert place("auto", CPU, 10 ** 15)[0] is False          # on the host already
    cuda = torch.device("cuda")
    free = 8 * 2 ** 30
    monkeypatch.setattr(windows.torch.cuda, "mem_get_info", lambda device: (free, 2 * free))
    assert place("auto", cuda, free // 2)[0] is False
    host, why = place("auto", cuda, free // 2 + 1)
    assert host and "over half of the GPU's free memory" in why
    assert place("auto", cuda, free, stateful=True)[0] is False
    assert place("device", cuda, 10 * free)[0] is False


def test_training_from_a_host_buffer_gives_the_same_run(tmp_path):
    runs = {}
    for buffer in ("device", "host"):
        out = tmp_path / buffer
        result = run_cli("train", SALES, "--out", out, "--set", "train.epochs=2", "--set", f"train.buffer={buffer}",
                         "--device", "cpu", *TINY)
        assert result.exit_code == 0, result.stderr
        assert ("series buffer in host memory: train.buffer host" in result.stderr) == (buffer == "host")
        done = run_cli("predict", SALES, "--model", out, "--out", tmp_path / f"{buffer}.csv")
        assert done.exit_code == 0, done.stderr
        runs[buffer] = (torch.load(out / "model.pt", weights_only=True),
                        (tmp_path / f"{buffer}.csv").read_bytes())
    assert runs["device"][1] == runs["host"][1]
    weights = [runs[b][0] for b in ("device", "host")]
    flat = [{k: v for k, v in _tensors(w)} for w in weights]
    assert flat[0].keys() == flat[1].keys() and len(flat[0]) > 4
    for key in flat[0]:
        torch.testing.assert_close(flat[0][key], flat[1][key], rtol=0, atol=0)


def _tensors(value, prefix=""):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            yield from _tensors(v, f"{prefix}/{k}")


def test_a_stateful_model_refuses_a_host_buffer(tmp_path):
    result = run_cli("train", SALES, "--out", tmp_path / "run", "--set", "train.tbptt=12", "--set",
                     "model.window_norm=none", "--set", "data.scaling=standard", "--set", "train.buffer=host")
    error_line(result, "train.buffer")
    assert not (tmp_path / "run").exists()


class Ops(TorchDispatchMode):
    """Counts the compute ops dispatched (views and allocations left out): on a GPU each launches a
    kernel, so this is the step's launch count, measurable on a CPU."""

    FREE = {"view", "_unsafe_view", "as_strided", "slice", "select", "unsqueeze", "squeeze", "t", "expand", "detach",
            "transpose", "permute", "alias", "unbind", "split", "split_with_sizes", "_reshape_alias", "reshape",
            "lift_fresh", "empty", "empty_like", "empty_strided", "new_empty_strided", "_local_scalar_dense"}

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in self.FREE:
            self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def test_the_training_step_launches_no_per_step_constants():
    """lstmcast's step against a bare nn.LSTM + head step of the same size, window_norm none and
    mse (benchmarks/throughput.py's comparison): 9 ops more a step at most, each accounted for
    (gather offsets add, gather, naive correction add, head dropout's 4, loss sum add_, plus the
    epoch's draw), and none of the per-step constants that used to be there (arange, new_ones,
    the none-normalisation's 0 * ones and (target - 0) / 1, the loss weight's mul)."""
    horizon, lookback, batch, steps = 6, 24, 32, 5
    scaled = [np.sin(np.arange(200) / 3 + k).astype(np.float32) for k in range(4)]
    buffer = SeriesBuffer.build(scaled, lookback, CPU)
    starts = buffer.training_starts(buffer.lengths - horizon, horizon)[: batch * steps]
    config = load_config(None, {"model.hidden_size": 8, "model.layers": 2, "model.window_norm": "none"})
    model = Forecaster(config.model, horizon, lookback)
    optimizer = make_optimizer(model, 1e-3, 0.0)
    batches = Batches(buffer, starts, horizon, batch, 1.0)
    runtime = Runtime(CPU, None, "fp32")
    run_epoch(model, optimizer, batches, make_loss("mse", 1), torch.Generator().manual_seed(0), runtime)

    class Bare(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(2, 8, 2, batch_first=True, dropout=0.1)
            self.head = torch.nn.Linear(8, horizon)

    bare = Bare()
    bare_optimizer = make_optimizer(bare, 1e-3, 0.0)
    data = [buffer.windows(starts[k * batch:(k + 1) * batch], horizon) for k in range(steps)]
    data = [(x.contiguous(), y.contiguous()) for x, y in data]

    def bare_epoch():
        for x, y in data:
            loss = torch.nn.functional.mse_loss(bare.head(bare.lstm(x)[0][:, -1]), y)
            bare_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(bare.parameters(), 1.0)
            bare_optimizer.step()

    bare_epoch()
    with Ops() as ours:
        run_epoch(model, optimizer, batches, make_loss("mse", 1), torch.Generator().manual_seed(1), runtime)
    with Ops() as theirs:
        bare_epoch()
    extra = ours.counts.copy()
    extra.subtract(theirs.counts)
    for constant in ("arange", "new_ones", "ones", "zeros_like"):
        assert ours.counts[constant] == 0, (constant, ours.counts[constant])
    assert ours.counts["index"] == steps + 1, ours.counts["index"]   # one gather a step, one for the epoch
    per_step = (sum(ours.counts.values()) - sum(theirs.counts.values())) / steps
    assert 0 < per_step <= 9, dict(+extra)
