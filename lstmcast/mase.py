"""MASE scales: the seasonal-naive in-sample MAE that MASE divides by, in the three places it is
measured. They differ on purpose; each name says which scale it is.

  window_scale       training: per model input window (torch), over its observed points only,
                     lag 1 when the window holds no seasonal pair, at least 1% of the window's mean
                     level (losses.MaseLoss; a flat window must not blow the loss up)
  history_scale      evaluation: per series history before the forecast origin (numpy), lag 1 when
                     the history is not longer than a season, NaN when it has no pair at all
                     (metrics.json's validation MASE and evaluate's backtests)
  competition_scale  benchmarks: the M3 / M4 / Tourism definition, lag `season` always, no fallback
                     (benchmarks/accuracy.py, to compare with published scores)
"""

from __future__ import annotations

import numpy as np


def window_scale(inputs, season: int):
    """(batch, 1): each window's in-sample MAE of the seasonal-naive forecast (lag `season`),
    over pairs of observed points; lag 1 when the window holds no such pair; at least 1% of the
    window's mean level, so a flat window does not blow the loss up.

    `inputs` (batch, lookback, features) torch tensor: column 0 the value, column 1 observed."""
    import torch  # here: metrics and evaluate import this module and need no torch

    values, observed = inputs[..., 0].float(), inputs[..., 1].float()

    def lag_mae(lag: int) -> tuple[torch.Tensor, torch.Tensor]:
        if values.shape[1] <= lag:
            zero = values.new_zeros(values.shape[0], 1)
            return zero, zero
        both = observed[:, lag:] * observed[:, :-lag]
        total = ((values[:, lag:] - values[:, :-lag]).abs() * both).sum(dim=1, keepdim=True)
        return total, both.sum(dim=1, keepdim=True)

    seasonal, pairs = lag_mae(season)
    step, step_pairs = lag_mae(1)
    scale = torch.where(pairs > 0, seasonal / pairs.clamp_min(1), step / step_pairs.clamp_min(1))
    level = (values.abs() * observed).sum(dim=1, keepdim=True) / observed.sum(dim=1, keepdim=True).clamp_min(1)
    return torch.maximum(scale, 0.01 * level).clamp_min(1e-8)


def history_scale(histories: list[np.ndarray], season: int) -> np.ndarray:
    """In-sample MAE of the seasonal-naive forecast per series (lag 1 when too short)."""
    scales = np.full(len(histories), np.nan)
    for i, h in enumerate(histories):
        lag = season if len(h) > season else 1
        if len(h) > lag:
            scales[i] = np.mean(np.abs(h[lag:] - h[:-lag]))
    return scales


def competition_scale(history: np.ndarray, season: int) -> float:
    """One series' scale as the forecasting competitions define it: the MAE of lag `season`
    differences over its whole history, no fallback (their series are all long enough)."""
    return np.mean(np.abs(history[season:] - history[:-season]))
