"""Backtest: forecast the last `horizon` points of every series from one or more forecast origins,
score the model against the naive and seasonal-naive baselines.

Window k of N (oldest first) ends `step * (N - k)` points before the end of each series: window N
holds out the last `horizon` points, as a plain hold-out evaluation does. Every (series, window)
pair goes through the model in one batched pass over one scaled buffer of the full series.

Scores say what they are: every scored point the run trained on, early-stopped on or calibrated on
(by timestamp, from the checkpoint's "seen") is counted as in-sample, per window and overall.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import timegrid
from .checkpoint import atomic_write_text
from .data import SeriesSet
from .errors import LstmcastError
from .events import Callback
from .metrics import mase_scale, naive, point_metrics, quantile_metrics, season_length, seasonal_naive
from .predict import CHUNK_SERIES, Run, forecast_at, load_run, point, series_chunks, whole_file_note
from .rundir import check_output
from .scoresums import WindowScores
from .stream import NotStreamable
from .validation import minimum_length, too_short

FORECASTERS = ("model", "naive", "seasonal_naive")
# In-sample points by what the run did with them, in this order: a point it trained on is "trained"
# even if it was also in an early-stopping window (refit).
SEEN_AS = ("trained", "early_stopping", "calibration")


@dataclass
class Backtest:
    """One row per scored (series, window) pair, oldest window first, series in file order."""

    series: np.ndarray                 # (rows,) index into the SeriesSet
    window: np.ndarray                 # (rows,) 1..N
    origin: np.ndarray                 # (rows,) index of the first target point within its series
    actual: np.ndarray                 # (rows, horizon)
    forecasts: dict[str, np.ndarray]   # FORECASTERS -> (rows, horizon); "model": the median with quantiles
    scale: np.ndarray                  # (rows,) MASE scale of the history before the origin
    quantiles: np.ndarray | None = None  # (rows, horizon, Q) of the run's levels, None: point forecasts


def check_windows(windows: int, step: int | None) -> None:
    if windows < 1:
        raise LstmcastError(f"--windows {windows}: must be 1 or more (1 = hold out the last horizon only)")
    if step is not None and step < 1:
        raise LstmcastError(f"--step {step}: must be 1 or more (the default is the horizon)")


def steps_before_end(windows: int, step: int) -> np.ndarray:
    """(windows,) how far each window's origin sits before the latest one's, oldest first."""
    return step * (windows - np.arange(1, windows + 1))


def backtest(run: Run, series: SeriesSet, windows: int = 1, step: int | None = None,
             season: int = 1) -> Backtest:
    """Forecasts and baselines for every (series, window) pair with >= 1 point before its origin.

    Series the run has not seen are scaled by the points before their earliest scored origin,
    so no window sees its own future through the scaler.
    """
    check_windows(windows, step)
    horizon = run.horizon
    step = horizon if step is None else step
    lengths = series.lengths()
    # (windows, n_series): the first target point of each window in each series.
    origins = lengths[None, :] - horizon - steps_before_end(windows, step)[:, None]
    window, index = np.nonzero(origins >= 1)          # row-major: oldest window first
    origin = origins[window, index]
    earliest = np.where(origins >= 1, origins, lengths[None, :]).min(axis=0)
    loc, scale = run.scaler.for_series(series.ids, [v[:e] for v, e in zip(series.values, earliest)])
    # Known future features of the held-out steps come from the data file itself.
    model = forecast_at(run, series, loc, scale, origin, index, fixed=True)   # (rows, horizon[, Q])
    # Targets by index into the unscaled float64 values laid end to end.
    flat = np.concatenate(series.values)
    first = np.cumsum(lengths) - lengths
    actual = flat[(first[index] + origin)[:, None] + np.arange(horizon)]
    histories = [series.values[i][:o] for i, o in zip(index, origin)]   # views, no copies
    forecasts = {"model": point(run, model), "naive": naive(histories, horizon),
                 "seasonal_naive": seasonal_naive(histories, horizon, season)}
    return Backtest(index, window + 1, origin, actual, forecasts, mase_scale(histories, season),
                    model if model.ndim == 3 else None)


def _utc_ns(times) -> np.ndarray:
    """int64 nanoseconds (UTC for tz-aware times, as given for naive ones; NaT for None) of a
    DatetimeIndex, or of a list of timestamps or ISO strings."""
    if not isinstance(times, pd.DatetimeIndex):
        times = pd.DatetimeIndex(pd.to_datetime(list(times), utc=True))
    return times.as_unit("ns").asi8   # pandas may infer "us" from text: compare like with like


def points_up_to(series: SeriesSet, cutoffs: list) -> np.ndarray:
    """(n_series,) how many points of each series lie at or before its cutoff (None: 0).

    One comparison over every series' timestamps at once (series.times()), then a cumulative sum
    per series: no loop over series, and any grid of timegrid's works (MS@15, B, DST in UTC)."""
    lengths = series.lengths()
    cut = _utc_ns(cutoffs)
    known = cut != np.iinfo(np.int64).min                                     # NaT: no cutoff
    before = _utc_ns(series.times()) <= np.repeat(cut, lengths)               # (total points,)
    ends = np.cumsum(lengths)
    total = np.concatenate([[0], np.cumsum(before)])
    return np.where(known, total[ends] - total[ends - lengths], 0)


def seen_points(run: Run, series: SeriesSet) -> dict[str, np.ndarray] | None:
    """SEEN_AS -> (n_series,) cumulative point counts from each series' start: the first
    `trained` points trained the forecasting weights, up to `early_stopping` also chose their
    epoch, up to `calibration` also calibrated the intervals. A series the run never saw: 0.
    None when the checkpoint does not record it (format < 4)."""
    seen = run.seen
    if seen is None:
        return None
    row = {sid: j for j, sid in enumerate(seen["series_ids"])}
    match = [row.get(sid) for sid in series.ids]

    def cutoffs(key: str, fallback: list) -> list:
        return [None if j is None else (seen[key][j] or fallback[i]) for i, j in enumerate(match)]

    trained = cutoffs("last_timestamps" if any(seen["refit"]) else "train_end", [None] * len(series))
    stopping = cutoffs("early_stopping_end", trained)
    calibration = cutoffs("calibration_end", stopping)
    counts = [points_up_to(series, c) for c in (trained, stopping, calibration)]
    counts = np.maximum.accumulate(np.stack(counts), axis=0)   # refit: trained covers the rest
    return dict(zip(SEEN_AS, counts))


def score(result: Backtest, rows: np.ndarray) -> dict[str, dict[str, float]] | None:
    """Metrics of each forecaster over the selected rows of one backtest held whole (None when
    there are none); evaluate() sums them chunk by chunk instead (scoresums), to within an ulp."""
    if not rows.any():
        return None
    return {name: point_metrics(result.actual[rows], result.forecasts[name][rows], result.scale[rows])
            for name in FORECASTERS}


def score_quantiles(run: Run, result: Backtest, rows: np.ndarray) -> dict[str, dict | None]:
    """{"intervals": ..., "quantile_loss": ...} of the model over the selected rows (None: no rows)."""
    if not rows.any():
        return {"intervals": None, "quantile_loss": None}
    return quantile_metrics(result.actual[rows], result.quantiles[rows], run.levels, run.quantiles)


def evaluate(data_path: str | Path, run_dir: str | Path, out_path: str | Path | None = None, *,
             device: str = "cpu", season: int | None = None, windows: int = 1,
             step: int | None = None, chunk_series: int | None = None, on_event: Callback | None = None) -> dict:
    """Metrics for the model and the naive / seasonal-naive baselines; JSON to `out_path` if given.

    `metrics` covers every scored (series, window) pair; `per_window` has one entry per window,
    oldest first. windows=1 is the plain hold-out of the last horizon points. A run with quantiles
    adds `intervals` and `quantile_loss` next to each `metrics`. `in_sample`, overall and per window,
    counts the scored points the run trained, early-stopped or calibrated on (_seen_upto()); null
    for a run whose checkpoint does not record it.

    The file is read `chunk_series` series at a time (predict's chunks; 0: at once): each chunk's
    backtest is folded into exact per-window sums (scoresums.WindowScores) and dropped, so memory is
    one chunk plus a few numbers per window, and the report has the same bits whatever the chunk.
    """
    from .spatial import is_grid_run
    if is_grid_run(run_dir):  # a gridded (ConvLSTM) run: persistence and per-cell seasonal naive
        from .spatial.forecast import evaluate_grid
        return evaluate_grid(data_path, run_dir, out_path, device=device, season=season, windows=windows, step=step)
    if season is not None and season < 1:
        raise LstmcastError(f"--season-length {season}: must be 1 or more (1 = no seasonality)")
    check_windows(windows, step)
    chunk = CHUNK_SERIES if chunk_series is None else chunk_series
    if chunk < 0:
        raise LstmcastError(f"--chunk-series {chunk}: must be 0 (the whole file at once) or more")
    if out_path is not None:  # before any work: a bad --out is found at once
        check_output(out_path, [data_path], run_dir)
    run = load_run(run_dir, device)
    horizon = run.horizon
    step = horizon if step is None else step
    season = season or season_length(timegrid.parse_freq(run.freq).name)

    def scores_of(chunk: int) -> tuple[WindowScores, int]:
        scores = WindowScores.for_run(windows, horizon, FORECASTERS, run.levels, run.quantiles,
                                      None if run.seen is None else SEEN_AS)
        n_series = 0
        for series in series_chunks(run, data_path, chunk):
            result, seen, n = _part(run, series, data_path, windows, step, season)
            scores.add(result.window - 1, result.actual, result.forecasts, result.scale, result.quantiles,
                       run.levels or (), _seen_upto(result, seen, horizon))
            n_series += n
        return scores, n_series

    try:
        scores, n_series = scores_of(chunk)
    except NotStreamable as exc:
        (on_event or (lambda event: None))(whole_file_note(data_path, exc))
        scores, n_series = scores_of(0)

    def scored(scores: WindowScores, w: int) -> dict:
        """Point metrics of window w; with quantiles, intervals and quantile_loss too."""
        out = {"metrics": scores.metrics(w)}
        if run.levels is not None:
            out.update(scores.quantile_scores(w))
        return out

    per_window = [{"window": k, "steps_before_end": int(back), "n_series": int(scores.rows[k - 1]),
                   **scored(scores, k - 1), "in_sample": scores.in_sample(k - 1)}
                  for k, back in enumerate(steps_before_end(windows, step), start=1)]
    every = scores.overall()
    report = {"data": str(data_path), "run": str(run_dir), "horizon": horizon,
              "season_length": season, "n_series": n_series, **scored(every, 0),
              "windows": windows, "step": step, "per_window": per_window,
              "in_sample": every.in_sample(0)}
    if out_path is not None:
        atomic_write_text(out_path, json.dumps(report, indent=2) + "\n")
    return report


def _part(run: Run, series: SeriesSet, data_path, windows: int, step: int, season: int
          ) -> tuple[Backtest, dict[str, np.ndarray] | None, int]:
    """One chunk's backtest, what the run saw of its series, and its number of series."""
    short = too_short(series, run.horizon)
    if short:
        sid, n = short[0]
        raise LstmcastError(f"{data_path}: series '{sid}' has {n} points; evaluate holds out the "
                            f"last {run.horizon}, so each series needs at least {minimum_length(run.horizon)}")
    return backtest(run, series, windows, step, season), seen_points(run, series), len(series)


def _seen_upto(result: Backtest, seen: dict[str, np.ndarray] | None, horizon: int) -> np.ndarray | None:
    """(SEEN_AS, rows) how many of each row's scored points the run saw, cumulative by kind: the
    first `trained` of its horizon points trained the weights, and so on (seen_points()); None
    when unknown (an old checkpoint)."""
    if seen is None:
        return None
    return np.stack([np.clip(seen[kind][result.series] - result.origin, 0, horizon) for kind in SEEN_AS])
