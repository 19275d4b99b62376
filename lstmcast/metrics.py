"""Point-forecast metrics, quantile and interval metrics, and the naive baselines every forecast
is compared against.

Arrays are (n_series, horizon), quantile forecasts (n_series, horizon, Q); histories are the
per-series values before the forecast origin.
"""

from __future__ import annotations

import numpy as np

from .keys import quantile_pairs
from .mase import history_scale
from .timegrid import season_length  # noqa: F401  (re-exported: the one table lives in timegrid)

mase_scale = history_scale  # evaluation's MASE scale (mase.py has all three, and why they differ)


def naive(histories: list[np.ndarray], horizon: int) -> np.ndarray:
    """Repeat the last observed value."""
    return np.stack([np.full(horizon, h[-1], dtype=np.float64) for h in histories])


def seasonal_naive(histories: list[np.ndarray], horizon: int, season: int) -> np.ndarray:
    """Repeat the last full season; series shorter than a season fall back to naive."""
    out = []
    for h in histories:
        if season <= 1 or len(h) < season:
            out.append(np.full(horizon, h[-1], dtype=np.float64))
        else:
            last = h[-season:]
            out.append(np.array([last[k % season] for k in range(horizon)], dtype=np.float64))
    return np.stack(out)


def point_metrics(actual: np.ndarray, forecast: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, sMAPE (in percent, 0..200) and MASE over all series and steps.

    sMAPE = mean of 200 |y - f| / (|y| + |f|), counting 0 where both are 0. MASE is the mean over
    series of MAE / scale, leaving out series whose scale is 0 (a flat history).
    """
    error = forecast - actual
    denom = np.abs(actual) + np.abs(forecast)
    smape = np.where(denom > 0, 200.0 * np.abs(error) / np.where(denom > 0, denom, 1.0), 0.0)
    per_series_mae = np.mean(np.abs(error), axis=1)
    usable = np.isfinite(scale) & (scale > 0)
    mase = float(np.mean(per_series_mae[usable] / scale[usable])) if usable.any() else float("nan")
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2))),
            "smape": float(np.mean(smape)), "mase": mase}


def compare(actual: np.ndarray, model_forecast: np.ndarray, histories: list[np.ndarray],
            season: int) -> dict[str, dict[str, float]]:
    """Metrics for the model and the naive / seasonal-naive baselines on the same points."""
    horizon = actual.shape[1]
    scale = history_scale(histories, season)
    return {
        "model": point_metrics(actual, model_forecast, scale),
        "naive": point_metrics(actual, naive(histories, horizon), scale),
        "seasonal_naive": point_metrics(actual, seasonal_naive(histories, horizon, season), scale),
    }


def pinball_loss(actual: np.ndarray, quantile_forecast: np.ndarray, level: float) -> float:
    """Mean pinball (quantile) loss of one level's forecasts, in the data's units:
    level * (y - q) where the actual y is above the forecast q, (1 - level) * (q - y) below.
    At level 0.5 it is half the MAE."""
    error = actual - quantile_forecast
    return float(np.mean(np.maximum(level * error, (level - 1.0) * error)))


def interval_metrics(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                     nominal: float) -> dict[str, float]:
    """Coverage (fraction of actuals inside [lower, upper], ends included) and mean width of one
    prediction interval, next to its nominal coverage."""
    inside = (actual >= lower) & (actual <= upper)
    return {"nominal": nominal, "coverage": float(np.mean(inside)), "width": float(np.mean(upper - lower))}


def pair_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def quantile_metrics(actual: np.ndarray, quantile_forecast: np.ndarray, levels: tuple[float, ...],
                     requested: list[float]) -> dict[str, dict]:
    """{"intervals": {"0.1-0.9": interval_metrics, ...}, "quantile_loss": {"0.1": pinball, ...}}
    over the `requested` levels; quantile_forecast (n, horizon, len(levels))."""
    column = {level: quantile_forecast[..., k] for k, level in enumerate(levels)}
    intervals = {pair_name(lo, hi): interval_metrics(actual, column[lo], column[hi], round(hi - lo, 12))
                 for lo, hi in quantile_pairs(requested)}
    losses = {f"{level:g}": pinball_loss(actual, column[level], level) for level in sorted(requested)}
    return {"intervals": intervals, "quantile_loss": losses}
