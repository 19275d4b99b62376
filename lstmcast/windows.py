"""Series -> one flat device tensor -> batches of (input window, target window) by index gather.

All series are laid end to end in one 1-D buffer, each preceded by `lookback` zeros of padding
whose `observed` flag is 0. A window is just the flat index of its first input position, so an
epoch is a permutation of an int64 tensor and a batch is one gather: no per-sample Python.

With covariates or calendar features each step also holds those (covariates.FeatureSpec.layout:
value, observed, past covariates, future covariates, calendar); the last `n_known` columns are
known in advance, and the model reads them for each forecast step from the rows after the input
window. To forecast past the end, each series is followed by `horizon` tail rows (value 0,
observed 0, its future features) before the next series' padding.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import torch

N_FEATURES = 2  # (scaled value, observed flag) per time step, before covariates and calendar


def buffer_bytes(lengths: np.ndarray, lookback: int, width: int, tail: int = 0) -> int:
    """Bytes of SeriesBuffer.build's float32 table: every series plus `lookback` padding rows (and
    `tail` rows after it), `width` features per row. Known before anything is allocated."""
    rows = int(np.sum(lengths)) + len(lengths) * (int(lookback) + int(tail))
    return rows * int(width) * 4


def window_batch_bytes(batch_size: int, lookback: int, horizon: int, width: int) -> int:
    """Bytes of one gathered batch of windows (SeriesBuffer.windows): the int64 index and the
    float32 rows it gathers, (batch, lookback + horizon[, width])."""
    return int(batch_size) * (int(lookback) + int(horizon)) * (8 + 4 * int(width))


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable; else all physical memory);
    None where neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


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
    n_known: int = 0        # trailing feature columns known in advance (future covariates, calendar)
    horizon: int = 0        # forecast steps whose known features `future` gathers
    series_of: torch.Tensor | None = None  # (total,) int64 embedding row of each row's series (-1: unseen)
    compute: torch.device | None = None    # where gathered windows go, when the buffer stays in host
                                           # memory (place: train.buffer host); None: features' device
    _steps: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # steps(n), made once

    @classmethod
    def build(cls, scaled: list[np.ndarray], lookback: int, device: torch.device,
              extra: list[np.ndarray] | None = None, tail: list[np.ndarray] | None = None,
              n_known: int = 0, horizon: int = 0, codes: np.ndarray | None = None,
              host: bool = False) -> SeriesBuffer:
        """`extra[i]`: (length_i, n_extra) more features per real step of series i; `tail[i]`:
        (rows, n_extra) features of the rows after its end (forecasting); `codes[i]`: its
        embedding row. Without them the buffer is (value, observed) only, as before covariates.
        `host`: keep the table in host memory; windows are gathered there and sent to `device`."""
        lengths = np.array([len(s) for s in scaled], dtype=np.int64)
        tails = np.array([len(t) for t in tail] if tail is not None else [0] * len(scaled), dtype=np.int64)
        width = N_FEATURES + (extra[0].shape[1] if extra else 0)
        offsets = np.cumsum(lengths + tails + lookback) - lengths - tails
        features = np.zeros((int((lengths + tails + lookback).sum()), width), dtype=np.float32)
        rows = _ranges(offsets, lengths)                  # every real point's row, series after series
        if len(rows):
            features[rows, 0] = np.concatenate(scaled)
            features[rows, 1] = 1.0
            if extra:
                features[rows, N_FEATURES:] = np.concatenate(extra)
        if tail is not None and tails.sum():
            features[_ranges(offsets + lengths, tails), N_FEATURES:] = np.concatenate(tail)
        table_device = torch.device("cpu") if host else device
        series_of = None
        if codes is not None:
            series_of = torch.from_numpy(np.repeat(np.asarray(codes, dtype=np.int64), lengths + tails + lookback))
            series_of = series_of.to(table_device)
        return cls(torch.from_numpy(features).to(table_device), offsets, lengths, lookback, n_known, horizon,
                   series_of, compute=torch.device(device) if host else None)

    @property
    def device(self) -> torch.device:
        """Where the model runs and gathered windows land."""
        return self.features.device if self.compute is None else self.compute

    def _send(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """table[index] on self.device. A host buffer gathers on the host into pinned memory (when
        the device is a GPU) and copies it asynchronously: the caching host allocator keeps the
        pinned block until the copy has run, so the next batch's gather can start at once."""
        if self.compute is None:
            return table[index]
        out = self._staging((index.numel(), *table.shape[1:]), table.dtype)
        torch.index_select(table, 0, index.reshape(-1), out=out)
        return out.view(*index.shape, *table.shape[1:]).to(self.compute, non_blocking=out.is_pinned())

    def _staging(self, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """Host memory for one gathered batch: pinned when it goes to a GPU."""
        return torch.empty(shape, dtype=dtype, pin_memory=self.compute.type == "cuda")

    def steps(self, n: int, device: torch.device) -> torch.Tensor:
        """arange(n) on `device`, made once per buffer: the offsets of a window's rows from its
        start (no arange launched per batch). Shared, so never written to."""
        key = (n, device)
        if key not in self._steps:
            self._steps[key] = torch.arange(n, device=device)
        return self._steps[key]

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
        """(batch,) starts -> (batch, lookback, features) model inputs."""
        return self._send(self.features, starts[:, None] + self.steps(self.lookback, starts.device))

    def future(self, starts: torch.Tensor) -> torch.Tensor | None:
        """(batch,) starts -> (batch, horizon, n_known): the known features of each forecast step,
        the rows lookback .. lookback + horizon - 1 after the start; None when there are none."""
        if self.n_known == 0:
            return None
        index = starts[:, None] + (self.lookback + self.steps(self.horizon, starts.device))
        return self._send(self.features, index)[..., -self.n_known:]

    def series(self, starts: torch.Tensor) -> torch.Tensor | None:
        """(batch,) embedding row of each window's series (read at its last input row), or None."""
        return None if self.series_of is None else self._send(self.series_of, starts + self.lookback - 1)

    def model_inputs(self, starts: torch.Tensor) -> tuple:
        """What the model is called with: (inputs, future or None, series or None)."""
        return self.inputs(starts), self.future(starts), self.series(starts)

    def windows(self, starts: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch,) starts -> inputs (batch, lookback, N_FEATURES), targets (batch, horizon)."""
        steps = self.steps(self.lookback + horizon, starts.device)
        window = self._send(self.features, starts[:, None] + steps)  # (batch, lookback + horizon, features)
        return window[:, : self.lookback], window[:, self.lookback:, 0]


def place(setting: str, device: torch.device, nbytes: int, stateful: bool = False) -> tuple[bool, str]:
    """(keep the series buffer in host memory?, why) for train.buffer `setting` on `device`, the
    buffer being `nbytes`. auto: on a GPU, host once the buffer would take over half of the
    device's free memory (the model, its activations and the optimizer need the rest). A stateful
    model (train.tbptt) reads the buffer on the device."""
    if setting == "host":
        return True, "train.buffer host"
    if setting == "device" or device.type != "cuda" or stateful:
        return False, "train.buffer " + setting if setting == "device" else "the device is the host"
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes > free // 2:
        return True, (f"the series buffer ({nbytes / 2 ** 30:.3g} GiB) is over half of the GPU's free memory "
                      f"({free / 2 ** 30:.3g} GiB): it stays in host memory, batches are copied asynchronously")
    return False, "the series buffer fits on the device"
