"""Training-step speed of every recurrent cell, as a ratio to torch.nn.LSTM of the same size.

One training step = forward through the encoder, a linear head on the last state, MSE loss,
backward, AdamW step, on one (batch, lookback, features) batch already on the device. Every cell
and the nn.LSTM reference are timed in the same process, interleaved repeat by repeat, so the
ratio survives a noisy machine; the absolute windows/s do not.

    python benchmarks/cells.py                       # cpu, and cuda when there is one
    python benchmarks/cells.py --device cpu --repeats 3 --steps 2
    python benchmarks/cells.py --device cuda --hidden 512

Columns: windows/s (median over repeats), time vs nn.LSTM (seconds per step / nn.LSTM's seconds
per step: 1.0 = as fast, 3.0 = three times slower), warm-up s (the first 3 steps' time beyond 3
steady steps: TorchScript / Triton compilation, cuDNN plans), params. The last line is JSON.

On a shared or busy CPU pass --threads 1: torch's default of one thread per core falls off a
cliff when other processes hold those cores (seen here: 30x slower), and the ratios with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from lstmcast import cells
from lstmcast.device import fallbacks
from lstmcast.fitstate import make_optimizer
from lstmcast.precision import fp32_math

DEFAULTS = {"cpu": {"batch": 256, "lookback": 72, "hidden": 64, "layers": 2, "steps": 5},
            "cuda": {"batch": 1024, "lookback": 168, "hidden": 256, "layers": 2, "steps": 20}}
WARMUP_STEPS = 3


class Model(nn.Module):
    """Encoder + linear head on the last step's state: the forecaster's shape without its extras."""

    def __init__(self, cell: str, features: int, hidden: int, layers: int, horizon: int):
        super().__init__()
        self.encoder = cells.make_encoder(cell, features, hidden, layers, dropout=0.1)
        self.head = nn.Linear(cells.encoder_output_size(hidden, False), horizon)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        states, _ = self.encoder(inputs)          # (batch, lookback, hidden)
        return self.head(states[:, -1])           # (batch, horizon)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(model, optimizer, inputs, targets, steps: int, autocast) -> float:
    """Seconds for `steps` training steps on the same batch."""
    device = inputs.device
    sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            prediction = model(inputs)
        loss = nn.functional.mse_loss(prediction.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - began


def settings_for(args, device: torch.device) -> dict:
    chosen = dict(DEFAULTS["cuda" if device.type == "cuda" else "cpu"])
    for key in chosen:
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    chosen["autocast"] = torch.bfloat16 if (args.precision == "bf16" or (
        args.precision == "auto" and device.type == "cuda")) else None
    return chosen


def bench_device(args, device: torch.device) -> list[dict]:
    s = settings_for(args, device)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(s["batch"], s["lookback"], args.features, generator=generator).to(device)
    targets = torch.randn(s["batch"], args.horizon, generator=generator).to(device)
    runs = {}
    for cell in args.cells:
        torch.manual_seed(0)
        model = Model(cell, args.features, s["hidden"], s["layers"], args.horizon).to(device)
        optimizer = make_optimizer(model, 1e-3, 0.0)   # as training: fused AdamW on CUDA
        cells._COMPILED.clear()  # each cell pays its own compilation, as in a fresh process
        # 3 warm-up steps: TorchScript's profiling executor optimises on the 2nd/3rd call
        first = train_steps(model, optimizer, inputs, targets, WARMUP_STEPS, s["autocast"])
        runs[cell] = {"model": model, "optimizer": optimizer, "first": first, "times": []}
    for _ in range(args.repeats):  # interleaved: every cell sees the same machine load
        for run in runs.values():
            run["times"].append(train_steps(run["model"], run["optimizer"], inputs, targets, s["steps"],
                                            s["autocast"]) / s["steps"])
    reference = statistics.median(runs["lstm"]["times"]) if "lstm" in runs else None
    rows = []
    for cell, run in runs.items():
        step = statistics.median(run["times"])
        rows.append({"device": device.type, "cell": cell, "batch": s["batch"], "lookback": s["lookback"],
                     "hidden": s["hidden"], "layers": s["layers"],
                     "precision": "bf16" if s["autocast"] else "fp32",
                     "windows_per_s": round(s["batch"] / step, 1),
                     "time_vs_lstm": round(step / reference, 3) if reference else None,
                     "warmup_s": round(max(run["first"] - WARMUP_STEPS * step, 0.0), 3),
                     "parameters": sum(p.numel() for p in run["model"].encoder.parameters())})
    return rows


def print_table(rows: list[dict], args) -> None:
    print(f"{'device':<7}{'cell':<10}{'batch':>7}{'lookback':>9}{'hidden':>7}{'layers':>7}{'prec':>6}"
          f"{'windows/s':>12}{'vs nn.LSTM':>12}{'warm-up s':>11}{'params':>9}")
    for r in rows:
        ratio = f"{r['time_vs_lstm']:.2f}x" if r["time_vs_lstm"] is not None else "-"
        print(f"{r['device']:<7}{r['cell']:<10}{r['batch']:>7}{r['lookback']:>9}{r['hidden']:>7}{r['layers']:>7}"
              f"{r['precision']:>6}{r['windows_per_s']:>12,.0f}{ratio:>12}{r['warmup_s']:>11.3f}"
              f"{r['parameters']:>9,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all", choices=("all", "cpu", "cuda"),
                        help="all: cpu, and cuda when available")
    parser.add_argument("--batch", type=int, default=None, help="windows per step (cpu 256, cuda 1024)")
    parser.add_argument("--lookback", type=int, default=None, help="time steps (cpu 72, cuda 168)")
    parser.add_argument("--hidden", type=int, default=None, help="hidden size (cpu 64, cuda 256)")
    parser.add_argument("--layers", type=int, default=None, help="stacked layers (2)")
    parser.add_argument("--features", type=int, default=2, help="inputs per step (value, observed)")
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    parser.add_argument("--steps", type=int, default=None, help="training steps per repeat (cpu 5, cuda 20)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "tf32"),
                        help="auto: bf16 autocast on cuda, fp32 on cpu (as training does)")
    parser.add_argument("--cells", default=",".join(cells.CELLS), help="comma list; lstm is the reference")
    parser.add_argument("--no-script", action="store_true",
                        help="run the peephole/cifg time loops as plain Python instead of TorchScript")
    parser.add_argument("--no-graphs", action="store_true",
                        help="CUDA: run the custom cells' Triton time loops eagerly instead of as CUDA graphs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    args.cells = [cells.check_cell(c.strip()) for c in args.cells.split(",") if c.strip()]
    if "lstm" not in args.cells:
        args.cells.insert(0, "lstm")
    cells.USE_SCRIPT = not args.no_script
    cells.graphs.USE_GRAPHS = not args.no_graphs
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            parser.error("--device cuda: CUDA is not available")
        devices.remove("cuda")

    rows = []
    with fp32_math(args.precision):   # fp32 is IEEE fp32 (no TF32), as training runs it
        for name in devices:
            rows += bench_device(args, torch.device(name))
    loops = "plain Python" if args.no_script else "TorchScript"
    print(f"torch {torch.__version__}, cpu threads {torch.get_num_threads()}, peephole/cifg loops {loops}, "
          f"triton {'yes' if cells.triton is not None else 'no'}, CUDA graphs {'no' if args.no_graphs else 'yes'}; "
          f"median of {args.repeats} repeats")
    print_table(rows, args)
    for path, reason in fallbacks().items():
        print(f"FALLBACK {path}: {reason}")
    print(json.dumps({"fallbacks": fallbacks(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "torchscript": not args.no_script, "triton": cells.triton is not None,
                      "cuda_graphs": not args.no_graphs,
                      "repeats": args.repeats, "rows": rows}))


if __name__ == "__main__":
    main()
