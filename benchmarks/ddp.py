"""Training windows per second: one process against torchrun's N ranks, same global batch.

    python benchmarks/ddp.py                       # 1 process (1 and all threads) vs 2 ranks
    python benchmarks/ddp.py --ranks 2 4 --epochs 4 --batch-size 512

Each run trains the same config on the same generated file (N series x 120 monthly points, epochs
of a fixed `train.windows_per_epoch`, no time budget, no early stop) in its own process tree; the
rate is windows trained per second of epoch time (history.csv's seconds, validation included),
the first epoch left out (warm-up). Ranks run with one intra-op thread each, as torchrun starts
them; the 1-process run is measured with one thread and with every core. The last line printed
is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from scale import make_file  # noqa: E402


def train(data: Path, out: Path, ranks: int, threads: int, args) -> float:
    """Windows per second of one training run on `ranks` processes of `threads` threads each."""
    sets = {"train.recipe": "none", "model.hidden_size": args.hidden, "model.layers": 2, "data.horizon": 12,
            "data.lookback": 36, "train.batch_size": args.batch_size, "train.epochs": args.epochs,
            "train.windows_per_epoch": args.windows, "train.patience": args.epochs, "train.device": "cpu"}
    command = ["-m", "lstmcast", "train", str(data), "--out", str(out), "--time-budget", "none", "--quiet",
               *[a for key, value in sets.items() for a in ("--set", f"{key}={value}")]]
    if ranks > 1:
        command = ["-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
                   str(29500 + os.getpid() % 1000), *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, *command], env=env, check=True, cwd=ROOT)
    seconds = pd.read_csv(out / "history.csv")["seconds"].iloc[1:].sum()
    return args.windows * (args.epochs - 1) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--windows", type=int, default=8192, help="train.windows_per_epoch")
    parser.add_argument("--batch-size", type=int, default=256, help="the global batch")
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "series.csv"
        make_file(data, args.series)
        results = {"1 process, 1 thread": train(data, Path(tmp) / "one-1", 1, 1, args),
                   f"1 process, {cores} threads": train(data, Path(tmp) / "one-all", 1, cores, args)}
        for ranks in args.ranks:
            results[f"{ranks} ranks, 1 thread each"] = train(data, Path(tmp) / f"ranks-{ranks}", ranks, 1, args)
    for name, rate in results.items():
        print(f"{name:<28}{rate:>12,.0f} windows/s")
    print(json.dumps({"windows_per_s": results, "cores": cores, "batch_size": args.batch_size,
                      "windows_per_epoch": args.windows, "epochs": args.epochs, "hidden": args.hidden}))


if __name__ == "__main__":
    main()
