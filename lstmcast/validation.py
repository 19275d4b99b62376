"""The time split and what is measured on its held-back parts.

Each series splits into a training part, an early-stopping window and (with model.conformal) a
calibration window (Parts); the early-stopping windows give the validation loss that picks the best
epoch and metrics.json's validation scores, the calibration windows the conformal corrections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import classical, timegrid
from .data import SeriesSet
from .keys import quantile_pairs
from .losses import Loss, window_loss
from .metrics import compare, pair_name, quantile_metrics, season_length
from .model import Ensemble, forecast_windows
from .quantiles import conformal_correction, interval_scores
from .runtime import Runtime
from .scaling import Scaler, unscale
from .tbptt import forecast_origins
from .windows import SeriesBuffer

# metrics.json's conformal "windows" note; "; refit trained on them afterwards" is added after refit.
CALIBRATION_WINDOWS = (
    "calibration windows: the last horizon of each series of at least 3 x horizon + 1 points, "
    "after its early-stopping window; neither trained the weights calibrated nor chose their epoch")


def minimum_length(horizon: int) -> int:
    """Points a series needs for one training window: `horizon` targets and 1 input."""
    return horizon + 1


def too_short(series: SeriesSet, horizon: int) -> list[tuple[str, int]]:
    """(id, points) of each series shorter than minimum_length(horizon), in file order: too short
    to train on (one window) and to score (evaluate holds out the last horizon after 1 input)."""
    need = minimum_length(horizon)
    return [(sid, len(v)) for sid, v in zip(series.ids, series.values) if len(v) < need]


def validated(lengths: np.ndarray, horizon: int) -> np.ndarray:
    """Series long enough to hold out their last `horizon` points and still train on the rest.

    Shorter series (horizon + 1 .. 2 x horizon points) train on all their points and are not
    validated: they still help the global model and still get forecasts.
    """
    return lengths >= 2 * horizon + 1


def calibrated(lengths: np.ndarray, horizon: int) -> np.ndarray:
    """Series long enough (3 x horizon + 1 points) to hold out a calibration window after their
    early-stopping window and still keep one training window (model.conformal)."""
    return lengths >= 3 * horizon + 1


@dataclass
class Parts:
    """Each series split in time, as point counts from its start.

    [0, train) trains the model. A validated series' early-stopping window [train, train + horizon)
    chooses the best epoch and drives the learning-rate schedule. With model.conformal a calibrated
    series' calibration window, its last horizon points after the early-stopping window, fits the
    conformal corrections and nothing else: the only scores neither trained on nor selected on.
    """

    horizon: int
    train: np.ndarray       # (n,) points in the training part (before any refit)
    validated: np.ndarray   # (n,) bool: has an early-stopping window
    calibrated: np.ndarray  # (n,) bool: has a calibration window (and so an early-stopping one)

    @property
    def stop_end(self) -> np.ndarray:
        """(n,) exclusive end of each series' early-stopping window (its training part's end where
        it has none)."""
        return self.train + self.horizon * self.validated


def split_parts(lengths: np.ndarray, horizon: int, conformal: bool = False) -> Parts:
    """Without model.conformal: validated series (>= 2 x horizon + 1 points) early-stop on their last
    horizon, shorter ones train on everything. With it, series of >= 3 x horizon + 1 points also
    calibrate on their last horizon and early-stop on the horizon before; those of 2 x horizon + 1
    .. 3 x horizon points early-stop only (a calibration window would leave no training window)."""
    is_validated = validated(lengths, horizon)
    is_calibrated = calibrated(lengths, horizon) & bool(conformal)
    train = lengths - horizon * is_validated - horizon * is_calibrated
    return Parts(horizon, train, is_validated, is_calibrated)


def stopping_starts(buffer: SeriesBuffer, parts: Parts) -> torch.Tensor:
    """One window per validated series whose targets are its early-stopping window."""
    index = np.flatnonzero(parts.validated)
    return buffer.origin_starts(parts.train[index], index)


def sampled(starts: torch.Tensor, cap: int | None, seed: int) -> torch.Tensor:
    """At most `cap` of `starts` (a fixed random sample, in their order); all when cap is None."""
    if cap is None or len(starts) <= cap:
        return starts
    keep = np.sort(np.random.default_rng(seed).choice(len(starts), size=cap, replace=False))
    return starts[torch.from_numpy(keep).to(starts.device)]


def calibration_starts(buffer: SeriesBuffer, parts: Parts) -> torch.Tensor:
    """One window per calibrated series whose targets are its calibration window (its last horizon)."""
    index = np.flatnonzero(parts.calibrated)
    return buffer.origin_starts(parts.stop_end[index], index)


def calibration_origins(parts: Parts) -> tuple[np.ndarray, np.ndarray]:
    """(origins, series index) of the calibration windows, for a stateful model's forecast_origins."""
    index = np.flatnonzero(parts.calibrated)
    return parts.stop_end[index], index


def seen_by_run(series: SeriesSet, parts: Parts, refits: list[bool]) -> dict:
    """The checkpoint's "seen" (format 4), what evaluate labels in-sample by: per series (in
    series_ids order) the timestamp of the last point of its training part, of its early-stopping
    window and of its calibration window (None: it has none); per ensemble member whether refit
    then trained on every point, up to last_timestamps."""
    starts = pd.DatetimeIndex(series.starts)

    def last(counts: np.ndarray, keep: np.ndarray) -> list[str | None]:
        ends = timegrid.isoformats(timegrid.shift(series.grid, starts, np.maximum(counts, 1) - 1))
        return [end if has else None for end, has in zip(ends, keep)]

    everyone = np.ones(len(series), dtype=bool)
    return {"train_end": last(parts.train, everyone),
            "early_stopping_end": last(parts.stop_end, parts.validated),
            "calibration_end": last(series.lengths(), parts.calibrated), "refit": list(refits)}


def validation_label(parts: Parts, refit: bool) -> dict:
    """What metrics.json's "validation" (and "intervals", "quantile_loss") scores are."""
    where = ("the horizon before each calibrated series' calibration window, else the last horizon"
             if parts.calibrated.any() else "the last horizon of each validated series")
    note = (f"early-stopping windows ({where}): they chose the best epoch and drove the learning-rate "
            f"schedule, so these scores are in-sample for model selection, not held out")
    if refit:
        note += "; refit then trained on them"
    return {"kind": "early_stopping", "in_sample": True, "n_series": int(parts.validated.sum()),
            "scores": ["validation", "intervals", "quantile_loss"], "note": note}


@torch.no_grad()
def validation_loss(model, buffer: SeriesBuffer, starts: torch.Tensor, horizon: int, loss_fn: Loss,
                    runtime: Runtime, batch_size: int = 4096) -> float:
    """The training loss (window-normalised units) on the validation windows."""
    model.eval()
    total = torch.zeros((), device=buffer.device)
    for chunk in torch.split(starts, batch_size):
        inputs, targets = buffer.windows(chunk, horizon)
        total += window_loss(model, inputs, targets, loss_fn, runtime, buffer.future(chunk),
                             buffer.series(chunk)) * len(chunk)
    return float(total) / max(len(starts), 1)


def validation_forecasts(model, buffer: SeriesBuffer, parts: Parts, series: SeriesSet, scaler: Scaler,
                         runtime: Runtime | None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """On the early-stopping windows, original units: the forecasts ((validated, horizon) or with
    quantiles (validated, horizon, Q)), the actual values (validated, horizon) and each validated
    series' history before its window."""
    horizon, is_validated, ends = parts.horizon, parts.validated, parts.stop_end[parts.validated]
    if getattr(model, "tbptt", 0):  # a stateful model: the state warmed over each training part
        index = np.flatnonzero(is_validated)
        scaled = forecast_origins(model, buffer, parts.train[index], index, runtime).cpu().double().numpy()
    else:
        val_starts = stopping_starts(buffer, parts)
        scaled = forecast_windows(model, buffer.model_inputs, val_starts, runtime).cpu().double().numpy()
    forecast = unscale(scaled, scaler.loc[is_validated], scaler.scale[is_validated])
    values = [v for v, keep in zip(series.values, is_validated) if keep]
    actual = np.stack([v[end - horizon: end] for v, end in zip(values, ends)])
    histories = [v[: end - horizon] for v, end in zip(values, ends)]
    return forecast, actual, histories


@dataclass
class Computed:
    """What finalize already computed on the early-stopping windows (members.select_classical): the
    model's validation_forecasts and each classical method's forecasts, so that validation_metrics
    does not compute them again."""

    forecast: np.ndarray
    actual: np.ndarray
    histories: list[np.ndarray]
    classical: dict[str, np.ndarray]


def validation_metrics(model, buffer: SeriesBuffer, parts: Parts, series: SeriesSet, scaler: Scaler,
                       runtime: Runtime | None, quantiles: list[float] | None = None,
                       methods: list[str] | None = None, input_length: int = 0,
                       computed: Computed | None = None) -> dict:
    """Model vs naive baselines on the early-stopping windows (`parts`), original units. With
    quantiles also interval coverage and pinball losses (of the uncalibrated model); with `methods`
    (model.classical) the point forecast is the median with those classical forecasts, as predict
    makes it. Without `runtime`: fp32. `computed`: the same model's forecasts (and the methods'),
    already made on these windows."""
    if computed is None:
        forecast, actual, histories = validation_forecasts(model, buffer, parts, series, scaler, runtime)
    else:
        forecast, actual, histories = computed.forecast, computed.actual, computed.histories
    point = forecast if forecast.ndim == 2 else forecast[..., model.median_index]
    season = season_length(series.freq)
    if methods:
        found = ([computed.classical[method] for method in methods] if computed is not None else
                 classical.forecasts(methods, histories, parts.horizon, season,
                                     classical.history_points(input_length, season)))
        point = classical.combine(point, found)
    metrics = {"horizon": parts.horizon, "season_length": season, "n_series": len(series),
               "n_validated": len(actual), "validation": compare(actual, point, histories, season)}
    if forecast.ndim == 3:
        metrics.update(quantile_metrics(actual, forecast, model.levels, quantiles))
    return metrics


@torch.no_grad()
def calibrate(model: Ensemble, buffer: SeriesBuffer, val_starts: torch.Tensor, horizon: int,
              runtime: Runtime | None = None, origins: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Conformalized quantile regression on the calibration windows `starts` (calibration_starts:
    neither trained on nor used to choose the epoch): per symmetric pair of levels and per step, the
    correction (window-normalised units) that makes the interval cover its nominal share of their
    targets. Plain lists, for the checkpoint and metrics.json. Without `runtime`: fp32.
    `origins` (origins, series index; calibration_origins): a stateful model's forecasts of the
    same windows, from its state over each series' history before them."""
    _, targets = buffer.windows(val_starts, horizon)                                     # (n, horizon)
    if origins is not None:  # a stateful model: the state warmed over each series up to its window
        quantiles = forecast_origins(model, buffer, *origins, runtime)                   # (n, horizon, Q)
        scale = torch.ones(len(targets), 1, device=targets.device)   # window_norm none: scaled units
    else:
        quantiles = forecast_windows(model, buffer.model_inputs, val_starts, runtime)
        scale = model.conformal_scale(buffer.inputs(val_starts))                         # (n, 1)
    pairs = quantile_pairs(model.levels)
    corrections = []
    for lo, hi in pairs:
        scores = interval_scores(quantiles, targets, (model.levels.index(lo), model.levels.index(hi)), scale)
        corrections.append(conformal_correction(scores, round(hi - lo, 12)).cpu().tolist())
    return {"pairs": [[lo, hi] for lo, hi in pairs], "names": [pair_name(lo, hi) for lo, hi in pairs],
            "corrections": corrections, "n_calibration": len(val_starts)}
