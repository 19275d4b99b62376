"""Where bf16 pays on a GPU: training-step time of each cell in IEEE fp32 and in bf16 autocast,
over hidden sizes, batch sizes and lookbacks, all in one process (the same model and batch for
both precisions, interleaved). `train.precision: auto` takes bf16 only where this says it is faster.

Columns: fp32 and bf16 ms per step (median of --repeats), and bf16's speed-up (fp32 time / bf16
time: above 1, bf16 is faster). For lstm, also `flat`: the module itself cast to bf16 (one flat
bf16 weight buffer, no per-step weight casts; not trainable in bf16 alone, shown to tell
cuDNN's own bf16 speed from the cost of casting the fp32 weights every step).

    python benchmarks/bf16_crossover.py                     # CUDA only
    python benchmarks/bf16_crossover.py --hidden 64,256 --cells lstm

The last line printed is a JSON object with every row.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cells import Model, train_steps  # noqa: E402  (benchmarks/cells.py)

from lstmcast.fitstate import make_optimizer  # noqa: E402
from lstmcast.precision import fp32_math  # noqa: E402


def per_step(model, inputs, targets, autocast, steps: int, repeats: int) -> float:
    optimizer = make_optimizer(model, 1e-3, 0.0)
    train_steps(model, optimizer, inputs, targets, 3, autocast)             # warm-up
    return statistics.median(train_steps(model, optimizer, inputs, targets, steps, autocast) / steps
                             for _ in range(repeats)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cells", default="lstm,gru,peephole,cifg")
    parser.add_argument("--hidden", default="32,64,96,128,192,256")
    parser.add_argument("--batch", default="256,1024")
    parser.add_argument("--lookback", default="48,168")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bf16_crossover.py: CUDA is not available")
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    rows = []
    print(f"{'cell':<9}{'hidden':>7}{'batch':>7}{'lookback':>9}{'fp32 ms':>10}{'bf16 ms':>10}{'speed-up':>10}"
          f"{'flat ms':>9}", flush=True)
    with fp32_math("fp32"):
        for cell in args.cells.split(","):
            for lookback in ints(args.lookback):
                for hidden in ints(args.hidden):
                    for batch in ints(args.batch):
                        torch.manual_seed(0)
                        inputs = torch.randn(batch, lookback, 2, device=device)
                        targets = torch.randn(batch, 24, device=device)
                        model = Model(cell, 2, hidden, args.layers, 24).to(device)
                        fp32 = per_step(model, inputs, targets, None, args.steps, args.repeats)
                        bf16 = per_step(model, inputs, targets, torch.bfloat16, args.steps, args.repeats)
                        flat = None
                        if cell == "lstm":
                            pure = copy.deepcopy(model).to(torch.bfloat16)
                            flat = per_step(pure, inputs.to(torch.bfloat16), targets, None, args.steps, args.repeats)
                        row = {"cell": cell, "hidden": hidden, "batch": batch, "lookback": lookback,
                               "fp32_ms": round(fp32, 3), "bf16_ms": round(bf16, 3),
                               "bf16_speedup": round(fp32 / bf16, 3), "flat_bf16_ms": flat and round(flat, 3)}
                        rows.append(row)
                        print(f"{cell:<9}{hidden:>7}{batch:>7}{lookback:>9}{fp32:>10.2f}{bf16:>10.2f}"
                              f"{fp32 / bf16:>9.2f}x{'' if flat is None else f'{flat:>9.2f}'}", flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      "torch": torch.__version__, "layers": args.layers, "rows": rows}))


if __name__ == "__main__":
    main()
