"""Which ensemble members forecast (`train.select`): chosen on the early-stopping windows.

Then (model.classical) the classical forecasts: every subset of them is scored by the validation
MASE of its median with the kept members' median forecast (choose_classical), the same way.

Members of different recipes help each other when they are about as good; a recipe that does not
suit the data (dividing by the mean level where the seasonal swing is small, say) only drags the
median. After every member has trained, each non-empty subset of them is scored by the validation
MASE of its median forecast (original units, on the early-stopping windows the members' best
epochs were chosen on), and the run keeps the smallest-error subset, preferring more members when
they are within SELECT_TOLERANCE of the best: more members, less variance on unseen points.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .classical import combine

SELECT_TOLERANCE = 0.005   # a larger subset within 0.5% of the best subset's MASE is preferred
MAX_EXHAUSTIVE = 8         # up to this many members every subset is scored; above, greedy backward


@dataclass(frozen=True)
class Selection:
    keep: tuple[int, ...]            # 0-based member indices, in training order
    scores: dict[tuple[int, ...], float]
    member_scores: list[float]

    def report(self) -> dict:
        """metrics.json's "selection"."""
        all_members = tuple(range(len(self.member_scores)))
        return {"metric": "validation MASE of the median forecast (early-stopping windows)",
                "kept": [k + 1 for k in self.keep],
                "member_mase": [round(s, 6) for s in self.member_scores],
                "kept_mase": round(self.scores[self.keep], 6),
                "all_mase": round(self.scores[all_members], 6) if all_members in self.scores else None}


def median_of(forecasts: np.ndarray, subset: tuple[int, ...]) -> np.ndarray:
    """forecasts (members, series, horizon[, levels]) -> the median over `subset`."""
    return np.median(forecasts[list(subset)], axis=0)


def mase(actual: np.ndarray, forecast: np.ndarray, scale: np.ndarray) -> float:
    usable = np.isfinite(scale) & (scale > 0)
    if not usable.any():
        return float("nan")
    return float(np.mean(np.mean(np.abs(forecast - actual), axis=1)[usable] / scale[usable]))


def choose_members(forecasts: np.ndarray, actual: np.ndarray, scale: np.ndarray,
                   tolerance: float = SELECT_TOLERANCE) -> Selection:
    """forecasts (members, series, horizon): point forecasts on the validation windows; actual
    (series, horizon); scale (series,): each series' MASE scale."""
    n = len(forecasts)
    members = [mase(actual, forecasts[k], scale) for k in range(n)]
    if n == 1 or not np.isfinite(members).all():
        keep = tuple(range(n))
        return Selection(keep, {keep: mase(actual, median_of(forecasts, keep), scale)}, members)
    if n <= MAX_EXHAUSTIVE:
        subsets = [s for size in range(1, n + 1) for s in itertools.combinations(range(n), size)]
        scores = {s: mase(actual, median_of(forecasts, s), scale) for s in subsets}
    else:
        scores = _backward(forecasts, actual, scale)
    return Selection(largest_within(scores, tolerance), scores, members)


def largest_within(scores: dict[tuple, float], tolerance: float) -> tuple:
    """The largest subset whose score is within `tolerance` of the best; among equals, the lowest."""
    best = min(scores.values())
    return min((s for s, v in scores.items() if v <= best * (1 + tolerance)), key=lambda s: (-len(s), scores[s]))


def _backward(forecasts, actual, scale) -> dict[tuple[int, ...], float]:
    """Greedy backward elimination: from all members, drop the one whose removal helps most."""
    current = tuple(range(len(forecasts)))
    scores = {current: mase(actual, median_of(forecasts, current), scale)}
    while len(current) > 1:
        trials = {tuple(k for k in current if k != drop): None for drop in current}
        for s in trials:
            scores[s] = mase(actual, median_of(forecasts, s), scale)
        current = min(trials, key=scores.get)
    return scores


@dataclass(frozen=True)
class Combination:
    """Which classical forecasts join the neural median (model.classical with train.select)."""
    keep: tuple[str, ...]
    scores: dict[tuple[str, ...], float]   # validation MASE per subset of methods; () = neural alone

    def report(self) -> dict:
        """metrics.json's "classical"."""
        return {"metric": "validation MASE of the median with the neural forecast (early-stopping windows)",
                "kept": list(self.keep), "kept_mase": round(self.scores[self.keep], 6),
                "neural_mase": round(self.scores[()], 6),
                "mase": {"+".join(s) or "neural": round(v, 6) for s, v in self.scores.items()}}


def choose_classical(neural: np.ndarray, classical: dict[str, np.ndarray], actual: np.ndarray, scale: np.ndarray,
                     tolerance: float = SELECT_TOLERANCE) -> Combination:
    """neural (series, horizon): the kept members' median on the validation windows; classical: each
    method's forecasts there. Every subset of the methods (the empty one: neural alone) is scored by
    the MASE of its median with the neural forecast; the largest subset within `tolerance` of the
    best is kept, as choose_members does."""
    names = tuple(classical)
    subsets = [s for size in range(len(names) + 1) for s in itertools.combinations(names, size)]
    scores = {s: mase(actual, combine(neural, [classical[n] for n in s]), scale) for s in subsets}
    finite = {s: v for s, v in scores.items() if np.isfinite(v)}
    return Combination(largest_within(finite, tolerance) if finite else (), scores)
