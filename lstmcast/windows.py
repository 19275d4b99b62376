"""Series -> one flat device tensor -> batches of (input window, target window) by index gather.

All series are laid end to end in one 1-D buffer, each preceded by `lookback` zeros of padding
whose `observed` flag is 0. A window is just the flat index of its first input position, so an
epoch is a permutation of an int64 tensor and a batch is one gather: no per-sample Python.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

N_FEATURES = 2  # (scaled value, observed flag) per time step


def _ranges(first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Concatenation of arange(first[i], first[i] + count[i]) over i, vectorised."""
    count = np.maximum(count, 0)
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    series_of = np.repeat(np.arange(len(count)), count)
    within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    return first[series_of] + within


@dataclass
class SeriesBuffer:
    """Scaled series on the device, laid out for index-gathered windows."""

    features: torch.Tensor  # (total, N_FEATURES) float32: (scaled value, observed flag) per step;
                            # padding rows are (0, 0): lookback of them, series 0, padding, series 1...
    offsets: np.ndarray     # (n_series,) flat index of each series' first real point
    lengths: np.ndarray     # (n_series,) number of real points per series
    lookback: int

    @classmethod
    def build(cls, scaled: list[np.ndarray], lookback: int, device: torch.device) -> SeriesBuffer:
        lengths = np.array([len(s) for s in scaled], dtype=np.int64)
        offsets = np.cumsum(lengths + lookback) - lengths
        features = np.zeros((int((lengths + lookback).sum()), N_FEATURES), dtype=np.float32)
        for offset, series in zip(offsets, scaled):
            features[offset: offset + len(series)] = np.stack([series, np.ones(len(series))], axis=1)
        return cls(torch.from_numpy(features).to(device), offsets, lengths, lookback)

    @property
    def values(self) -> torch.Tensor:
        """(total,) scaled values (a strided view)."""
        return self.features[:, 0]

    def to_starts(self, starts: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(starts, dtype=np.int64)).to(self.values.device)

    def with_lookback(self, lookback: int) -> SeriesBuffer:
        """The same buffer read with a shorter window (an ensemble member's): no copy."""
        if lookback > self.lookback:
            raise ValueError(f"lookback {lookback} > the buffer's padding {self.lookback}")
        return dataclasses.replace(self, lookback=lookback)

    def training_starts(self, train_lengths: np.ndarray, horizon: int,
                        per_series: int | None = None) -> torch.Tensor:
        """Every window whose target lies inside the training part and which sees >= 1 real input;
        with `per_series`, only the latest that many windows of each series."""
        first_target = self.offsets + 1
        count = np.maximum(train_lengths - horizon, 0)
        if per_series is not None:
            first_target = first_target + np.maximum(count - per_series, 0)
            count = np.minimum(count, per_series)
        return self.to_starts(_ranges(first_target - self.lookback, count))

    def target_starts(self, horizon: int) -> torch.Tensor:
        """One window per series whose target is its last `horizon` points (validation)."""
        return self.to_starts(self.offsets + self.lengths - horizon - self.lookback)

    def forecast_starts(self) -> torch.Tensor:
        """One window per series whose input is its last `lookback` points (forecast the future)."""
        return self.origin_starts(self.lengths)

    def origin_starts(self, origins: np.ndarray, series: np.ndarray | None = None) -> torch.Tensor:
        """One window per cut point: its input is the `lookback` points before `origins[j]` of series
        `series[j]` (default: series j), its target starts at that point.

        An origin in 1..length reads only that series and its own padding, never its neighbour."""
        series = np.arange(len(self.lengths)) if series is None else np.asarray(series)
        return self.to_starts(self.offsets[series] + np.asarray(origins) - self.lookback)

    def inputs(self, starts: torch.Tensor) -> torch.Tensor:
        """(batch,) starts -> (batch, lookback, N_FEATURES) model inputs."""
        index = starts[:, None] + torch.arange(self.lookback, device=starts.device)
        return self.features[index]

    def windows(self, starts: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch,) starts -> inputs (batch, lookback, N_FEATURES), targets (batch, horizon)."""
        steps = torch.arange(self.lookback + horizon, device=starts.device)
        window = self.features[starts[:, None] + steps]      # (batch, lookback + horizon, features)
        return window[:, : self.lookback], window[:, self.lookback:, 0]
