"""Per-series scalers: fitted on the training part only, saved as plain numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import LstmcastError
from .keys import SCALINGS as METHODS  # noqa: F401  (data.scaling's values, declared with the key)

# Largest |value| computed with safely: the scalers and the metrics work in float64 and square
# errors (1e100 ** 2 is far from the float64 limit, 1.8e308). Unscaled values (none) go straight
# into the float32 model, whose squared-error loss overflows past about 1e19.
LARGEST = {"none": 1e18}
LARGEST_SCALED = 1e100


def check_magnitude(method: str, ids: list[str], values: list[np.ndarray], path) -> None:
    """LstmcastError naming the first series with a value too large to scale, train and score
    without overflow (instead of overflow warnings, then a 'diverged' error or inf metrics)."""
    limit = LARGEST.get(method, LARGEST_SCALED)
    flat = np.concatenate(values) if len(values) else np.zeros(0)
    big = np.abs(flat) > limit
    if not big.any():
        return
    first = int(np.argmax(big))
    series = int(np.searchsorted(np.cumsum([len(v) for v in values]), first, side="right"))
    how = ("use data.scaling=standard or divide the column by a power of 10" if method == "none"
           else "divide the column by a power of 10 (and multiply the forecasts back)")
    raise LstmcastError(f"{path}: series '{ids[series]}' has the value {flat[first]:g}, too large to compute "
                        f"with (|value| above {limit:g} with data.scaling={method}); {how}")


def _fit_one(method: str, values: np.ndarray) -> tuple[float, float]:
    """(loc, scale) so that (x - loc) / scale is the scaled series."""
    if method == "standard":
        loc, scale = float(np.mean(values)), float(np.std(values))
    elif method == "robust":
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        loc, scale = float(q50), float(q75 - q25)
    elif method == "minmax":
        loc, scale = float(np.min(values)), float(np.max(values) - np.min(values))
    else:
        loc, scale = 0.0, 1.0
    # A flat series has no spread; dividing by ~0 would blow it up, so leave its scale alone.
    if not np.isfinite(scale) or scale <= 1e-12 * max(1.0, abs(loc)):
        scale = 1.0
    return loc, scale


def _fit_rows(method: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_fit_one for every row of a (n, length) array at once: the same numpy reductions along
    the last axis, so the same bits as one series at a time."""
    if method == "standard":
        loc, scale = np.mean(rows, axis=1), np.std(rows, axis=1)
    elif method == "robust":
        q25, q50, q75 = np.percentile(rows, [25, 50, 75], axis=1)
        loc, scale = q50, q75 - q25
    elif method == "minmax":
        loc, scale = np.min(rows, axis=1), np.max(rows, axis=1) - np.min(rows, axis=1)
    else:
        loc, scale = np.zeros(len(rows)), np.ones(len(rows))
    flat = ~np.isfinite(scale) | (scale <= 1e-12 * np.maximum(1.0, np.abs(loc)))
    return loc.astype(np.float64), np.where(flat, 1.0, scale).astype(np.float64)


def fit_many(method: str, parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(loc, scale) of every series, series of one length fitted together (no loop over series)."""
    loc, scale = np.zeros(len(parts)), np.ones(len(parts))
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    for length in np.unique(lengths):
        index = np.flatnonzero(lengths == length)
        if length == 0:
            continue  # nothing to fit: left as (0, 1)
        rows = np.stack([parts[i] for i in index]) if len(index) > 1 else parts[index[0]][None, :]
        loc[index], scale[index] = _fit_rows(method, np.asarray(rows, dtype=np.float64))
    return loc, scale


@dataclass
class Scaler:
    method: str
    ids: list[str]
    loc: np.ndarray    # (n_series,) float64
    scale: np.ndarray  # (n_series,) float64

    @classmethod
    def fit(cls, method: str, ids: list[str], parts: list[np.ndarray]) -> Scaler:
        loc, scale = fit_many(method, parts)
        return cls(method, list(ids), loc, scale)

    def for_series(self, ids: list[str], histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(loc, scale) for each id; a series not seen in training is fitted on its own history."""
        where = pd.Index(self.ids).get_indexer(list(ids))
        loc, scale = self.loc[where].copy(), self.scale[where].copy()
        unseen = np.flatnonzero(where < 0)
        if len(unseen):
            loc[unseen], scale[unseen] = fit_many(self.method, [histories[k] for k in unseen])
        return loc, scale

    def to_dict(self) -> dict:
        return {"method": self.method, "ids": list(self.ids),
                "loc": self.loc.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(d["method"], list(d["ids"]), np.asarray(d["loc"], dtype=np.float64),
                   np.asarray(d["scale"], dtype=np.float64))


def to_scaled(values: list[np.ndarray], loc: np.ndarray, scale: np.ndarray) -> list[np.ndarray]:
    """Each series in the scaler's units, (x - loc[i]) / scale[i]: what the model reads, in
    training and in forecasting (the inverse of unscale)."""
    return [(v - lo) / sc for v, lo, sc in zip(values, loc, scale)]


def unscale(scaled: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scaled forecasts (n, horizon) or (n, horizon, Q) -> the data's units; loc, scale (n,) per row."""
    shape = (-1,) + (1,) * (scaled.ndim - 1)
    return scaled * scale.reshape(shape) + loc.reshape(shape)
