"""Training throughput: lstmcast's real training loop vs a bare nn.LSTM + head step of the same size.

Both run in this process on the same device, interleaved, so the ratio is what the data path
(index gather from the series buffer, shuffling, loss bookkeeping) costs on top of the model's own
forward/backward/optimizer step. The bare loop reads pre-built batch tensors that already sit on
the device, so it has no data cost at all. Both take the optimizer lstmcast trains with
(fitstate.make_optimizer: AdamW, fused on CUDA) and the same encoder module (cells.TorchLSTM:
nn.LSTM, whose bf16 is cuDNN's real bf16), so the ratio is the data path's cost alone.
--profile N prints, for N steps of each loop, the ops by self device time (CUDA) or CPU time.

    python benchmarks/throughput.py                 # auto device
    python benchmarks/throughput.py --device cuda --windows 262144

The last line printed is a JSON object with windows_per_s, bare_windows_per_s and ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

from lstmcast.cells import TorchLSTM
from lstmcast.config import load_config
from lstmcast.device import describe, resolve_device
from lstmcast.errors import LstmcastError
from lstmcast.fitstate import make_optimizer
from lstmcast.losses import make_loss
from lstmcast.model import Forecaster
from lstmcast.precision import PRECISIONS, autocast_dtype, fp32_math
from lstmcast.runtime import Runtime
from lstmcast.train import Batches, run_epoch
from lstmcast.windows import N_FEATURES, SeriesBuffer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_buffer(args, device) -> tuple[SeriesBuffer, torch.Tensor]:
    """Synthetic seasonal series laid out exactly as training lays them out (--buffer host: in host
    memory, each batch gathered there and copied to the device, as train.buffer host does)."""
    rng = np.random.default_rng(0)
    per_series = args.windows // args.series + args.horizon
    t = np.arange(per_series + args.horizon)
    series = [np.sin(2 * np.pi * t / 24 + rng.uniform(0, 6)) + 0.1 * rng.standard_normal(len(t))
              for _ in range(args.series)]
    buffer = SeriesBuffer.build(series, args.lookback, device, host=getattr(args, "buffer", "device") == "host")
    starts = buffer.training_starts(buffer.lengths - args.horizon, args.horizon)
    return buffer, starts[: args.windows]


def time_lstmcast(model, optimizer, buffer, starts, args, autocast, device) -> float:
    generator = torch.Generator().manual_seed(0)
    sync(device)
    began = time.perf_counter()
    run_epoch(model, optimizer, Batches(buffer, starts, args.horizon, args.batch_size, 1.0),
              make_loss("mse", 1), generator, Runtime(device, autocast, args.precision))
    sync(device)
    return len(starts) / (time.perf_counter() - began)


class Bare(nn.Module):
    def __init__(self, hidden, layers, horizon):
        super().__init__()
        self.lstm = TorchLSTM(N_FEATURES, hidden, layers, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def time_bare(model, optimizer, inputs, targets, autocast, device) -> float:
    sync(device)
    began = time.perf_counter()
    for x, y in zip(inputs, targets):
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            prediction = model(x)
        loss = nn.functional.mse_loss(prediction.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    sync(device)
    return sum(len(x) for x in inputs) / (time.perf_counter() - began)


def profile_loops(args, model, optimizer, buffer, starts, bare, bare_optimizer, inputs, targets, autocast,
                  device) -> None:
    """Top ops of `args.profile` steps of each loop (self device time on CUDA, CPU time on a CPU)."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    windows = args.profile * args.batch_size
    short = argparse.Namespace(**{**vars(args), "windows": windows})
    for name, run in (("lstmcast run_epoch", lambda: time_lstmcast(model, optimizer, buffer, starts[:windows], short,
                                                                   autocast, device)),
                      ("bare", lambda: time_bare(bare, bare_optimizer, inputs[: args.profile],
                                                 targets[: args.profile], autocast, device))):
        with profile(activities=activities) as prof:
            run()
        events = prof.key_averages()
        launches = sum(e.count for e in events if getattr(getattr(e, "device_type", None), "name", "") == "CUDA")
        print(f"\n--- profile: {name}, {args.profile} steps"
              + (f", {launches / args.profile:.0f} device kernels a step" if cuda else ""))
        print(events.table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=18,
                           max_name_column_width=60))


def count_ops(args, model, optimizer, buffer, starts, bare, bare_optimizer, inputs, targets, autocast,
              device, steps: int = 10) -> tuple[float, float]:
    """Compute ops dispatched per step by each loop (views and allocations left out): on a GPU each
    is a kernel launch, and a small model's step is bound by launching them."""
    from torch.utils._python_dispatch import TorchDispatchMode

    free = {"view", "_unsafe_view", "as_strided", "slice", "select", "unsqueeze", "squeeze", "t", "expand",
            "detach", "transpose", "permute", "alias", "unbind", "split", "split_with_sizes", "_reshape_alias",
            "reshape", "lift_fresh", "empty", "empty_like", "empty_strided", "new_empty_strided",
            "_local_scalar_dense"}

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ not in free:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    short = argparse.Namespace(**{**vars(args), "windows": steps * args.batch_size})
    counts = []
    for run in (lambda: time_lstmcast(model, optimizer, buffer, starts[: steps * args.batch_size], short, autocast,
                                      device),
                lambda: time_bare(bare, bare_optimizer, inputs[:steps], targets[:steps], autocast, device)):
        Count.n = 0
        with Count():
            run()
        counts.append(Count.n / steps)
    return counts[0], counts[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--windows", type=int, default=None, help="windows per timed epoch")
    parser.add_argument("--series", type=int, default=64)
    parser.add_argument("--lookback", type=int, default=72)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile N steps of each loop and print the top ops")
    parser.add_argument("--buffer", default="device", choices=("device", "host"),
                        help="where lstmcast's series buffer lives (train.buffer); the bare loop's batches "
                             "are on the device either way")
    parser.add_argument("--count-ops", action="store_true",
                        help="also count the compute ops (kernel launches on a GPU) of 10 steps of each loop")
    args = parser.parse_args()

    try:
        device = resolve_device(args.device)
        autocast = autocast_dtype(args.precision, device, ("lstm",), [("lstm", args.hidden, args.batch_size)])
    except LstmcastError as exc:  # e.g. --precision bf16 where cuDNN has no bf16 LSTM: say why
        print(f"throughput: {exc}", file=sys.stderr)
        sys.exit(2)
    with fp32_math(args.precision):
        measure(args, device, autocast)


def measure(args, device: torch.device, autocast: torch.dtype | None) -> None:
    if args.windows is None:
        args.windows = 262144 if device.type == "cuda" else 8192
    torch.manual_seed(0)
    torch.set_num_threads(torch.get_num_threads())
    buffer, starts = make_buffer(args, device)

    config = load_config(None, {"model.hidden_size": args.hidden, "model.layers": args.layers})
    model = Forecaster(config.model, args.horizon, args.lookback).to(device)
    optimizer = make_optimizer(model, 1e-3, 0.0)
    bare = Bare(args.hidden, args.layers, args.horizon).to(device)
    bare_optimizer = make_optimizer(bare, 1e-3, 0.0)
    # The bare loop's batches are built up front, already on the device: zero data cost.
    rows = torch.randperm(len(starts), device=device)
    batches = [buffer.windows(starts[r], args.horizon) for r in torch.split(rows, args.batch_size)]
    inputs = [b[0].contiguous() for b in batches]
    targets = [b[1].contiguous() for b in batches]

    # Warm-up (cuDNN plans, allocator, autocast caches), then interleave the two, repeat.
    time_lstmcast(model, optimizer, buffer, starts, args, autocast, device)
    time_bare(bare, bare_optimizer, inputs, targets, autocast, device)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(time_lstmcast(model, optimizer, buffer, starts, args, autocast, device))
        theirs.append(time_bare(bare, bare_optimizer, inputs, targets, autocast, device))
    ops = count_ops(args, model, optimizer, buffer, starts, bare, bare_optimizer, inputs, targets, autocast,
                    device) if args.count_ops else None
    if args.profile:
        profile_loops(args, model, optimizer, buffer, starts, bare, bare_optimizer, inputs, targets, autocast, device)
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    ratio = ours_median / theirs_median

    precision = "bf16" if autocast else ("tf32" if args.precision == "tf32" and device.type == "cuda" else "fp32")
    print(f"device {describe(device)}, {precision}, threads {torch.get_num_threads()}; "
          f"batch {args.batch_size}, lookback {args.lookback}, horizon {args.horizon}, "
          f"hidden {args.hidden} x {args.layers} layers; {len(starts)} windows per epoch, "
          f"median of {args.repeats}")
    print(f"{'loop':<28}{'windows/s':>14}")
    print(f"{'lstmcast run_epoch':<28}{ours_median:>14,.0f}")
    print(f"{'bare nn.LSTM + head':<28}{theirs_median:>14,.0f}")
    print(f"{'ratio (lstmcast / bare)':<28}{ratio:>14.3f}")
    if ops:
        print(f"compute ops a step: lstmcast {ops[0]:.1f}, bare {ops[1]:.1f}")
    print(json.dumps({"device": describe(device), "precision": precision, "buffer": args.buffer,
                      **({"ops_per_step": ops[0], "bare_ops_per_step": ops[1]} if ops else {}),
                      "batch_size": args.batch_size, "lookback": args.lookback,
                      "horizon": args.horizon, "hidden_size": args.hidden, "layers": args.layers,
                      "windows_per_s": round(ours_median, 1),
                      "bare_windows_per_s": round(theirs_median, 1), "ratio": round(ratio, 4)}))


if __name__ == "__main__":
    main()
