"""Quantile forecasts: keeping levels in order, and conformal calibration of their intervals.

A quantile forecast is (..., horizon, Q) with its levels ascending along the last dimension, the
median (level 0.5) among them at `median_index`. Conformal calibration is conformalized quantile
regression (Romano, Patterson and Candès 2019): each symmetric pair of levels (lo, hi = 1 - lo) is
widened (or narrowed) per horizon step by a correction learnt from held-out errors, measured in
window-normalised units so that one correction fits series of every level.
"""

from __future__ import annotations

import math

import torch


def keep_monotone(quantiles: torch.Tensor, median_index: int) -> torch.Tensor:
    """Levels in order again, the median untouched: the levels below the median are clipped to at
    most the median and sorted, those above to at least the median and sorted. (..., Q) -> (..., Q)."""
    median = quantiles[..., median_index: median_index + 1]
    below = torch.minimum(quantiles[..., :median_index], median).sort(dim=-1).values
    above = torch.maximum(quantiles[..., median_index + 1:], median).sort(dim=-1).values
    return torch.cat([below, median, above], dim=-1)


def interval_scores(quantiles: torch.Tensor, target: torch.Tensor, pair: tuple[int, int],
                    scale: torch.Tensor) -> torch.Tensor:
    """CQR nonconformity scores max(q_lo - y, y - q_hi) / scale, (n, horizon): positive where the
    target falls outside the interval, by how far; negative inside.

    quantiles (n, horizon, Q), target (n, horizon), scale (n, 1): the window's scale.
    """
    lo, hi = pair
    return torch.maximum(quantiles[..., lo] - target, target - quantiles[..., hi]) / scale


def conformal_correction(scores: torch.Tensor, coverage: float) -> torch.Tensor:
    """(n, horizon) scores -> (horizon,): the ceil((n + 1) coverage)-th smallest score of each step.

    Adding it to both ends of the interval covers a new exchangeable point with probability at least
    `coverage`. With too few points (ceil((n + 1) coverage) > n) the exact quantile would be
    infinite; the largest score is used instead, so the guarantee is then not met.
    """
    n = scores.shape[0]
    k = min(math.ceil((n + 1) * coverage - 1e-9), n)   # 1e-9: 0.8 * 5 is 4, not a hair above
    return scores.float().sort(dim=0).values[k - 1]


def widen(quantiles: torch.Tensor, corrections: torch.Tensor, pairs: list[tuple[int, int]],
          median_index: int, scale: torch.Tensor) -> torch.Tensor:
    """Apply conformal corrections: q_lo -= c * scale, q_hi += c * scale per pair and step, then
    keep the levels in order with the median unchanged.

    quantiles (batch, horizon, Q), corrections (pairs, horizon), scale (batch, 1).
    """
    out = quantiles.clone()
    for (lo, hi), correction in zip(pairs, corrections):
        shift = correction[None, :] * scale            # (batch, horizon)
        out[..., lo] = out[..., lo] - shift
        out[..., hi] = out[..., hi] + shift
    return keep_monotone(out, median_index)
