"""Truncated back-propagation through time (train.tbptt K > 0): one stateful model over whole series.

Training reads each series' training part in consecutive chunks of K steps and carries the
encoder's hidden (and cell) state from chunk to chunk, detached between chunks: memory and time
per optimizer step are those of a K-step window, whatever the length of the history. Series are
packed into `slots` batch rows (pack -> Lanes): a slot reads one series chunk after chunk, then the
next series from a zero state, so a state only ever follows its own series. Every position read is
a forecast origin: the head forecasts the next `horizon` points from the state after it, so a
chunk trains on K windows' worth of targets for the price of one pass.

Forecasting (early stopping, validation metrics, predict, evaluate, backtests) warms the state over
each series' history up to the forecast origin in one no-grad pass, then reads the head there
(forecast_origins): the same state training saw at that point.

The model has no window of its own, so nothing may depend on one: config.py refuses per-window
normalisation, window-reading heads (attention, linear skip, bidirectional) and the keys that
choose windows (docs/model.md, Stateful training).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .quantiles import keep_monotone, widen
from .windows import SeriesBuffer, _ranges

# Steps per no-grad chunk when warming the state to forecast: the state is the same whatever the
# chunk length (a cuDNN/CPU LSTM call per chunk); longer chunks are fewer calls.
FORECAST_CHUNK = 512
FORECAST_SLOTS = 256  # series warmed side by side (batch rows) when forecasting


@dataclass
class Lanes:
    """Which series each batch row (slot) reads at each step: (steps, slots) tables."""

    series: np.ndarray       # (steps, slots) int64 series read; -1: the slot is idle
    start: np.ndarray        # (steps, slots) int64 position, in its series, of the chunk's first step
    fresh: np.ndarray        # (steps, slots) bool: the slot starts a series here (zero state)
    slot_of: np.ndarray      # (n_series,) slot of each series (-1: not read)
    first_step: np.ndarray   # (n_series,) step of each series' first chunk

    @property
    def steps(self) -> int:
        return self.series.shape[0]


def pack(lengths: np.ndarray, chunk: int, slots: int) -> Lanes:
    """Series of `lengths` points (0: not read) into `slots` lanes of `chunk`-step chunks: longest
    first, each to the lane free soonest (LPT), so the lanes end about together. A series starts
    at a chunk boundary; a chunk past its end is padding (masked)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    chunks = -(-lengths // chunk)
    slot_of = np.full(len(lengths), -1, dtype=np.int64)
    first = np.zeros(len(lengths), dtype=np.int64)
    heap = [(0, s) for s in range(max(int(slots), 1))]
    for i in np.argsort(-chunks, kind="stable"):  # one heap operation per series: O(n log slots)
        if chunks[i] == 0:
            break
        end, slot = heapq.heappop(heap)
        slot_of[i], first[i] = slot, end
        heapq.heappush(heap, (end + int(chunks[i]), slot))
    steps = max(end for end, _ in heap)
    series = np.full((steps, len(heap)), -1, dtype=np.int64)
    start = np.zeros((steps, len(heap)), dtype=np.int64)
    fresh = np.zeros((steps, len(heap)), dtype=bool)
    read = np.flatnonzero(chunks > 0)
    within = _ranges(np.zeros(len(read), dtype=np.int64), chunks[read])   # chunk number in its series
    owner = np.repeat(read, chunks[read])
    step, slot = first[owner] + within, slot_of[owner]
    series[step, slot], start[step, slot], fresh[step, slot] = owner, within * chunk, within == 0
    return Lanes(series, start, fresh, slot_of, first)


def gather(buffer: SeriesBuffer, series: np.ndarray, start: np.ndarray, chunk: int,
           read: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the lanes: (slots,) series (-1 idle) and chunk starts -> inputs (slots, chunk,
    features), their flat buffer rows (slots, chunk) and `valid` (slots, chunk): the positions
    that are before `read[series]`. Rows past a series' end are zeroed (padding, masked)."""
    device = buffer.features.device
    active = series >= 0
    owner = np.where(active, series, 0)
    base = np.where(active, buffer.offsets[owner] + start, 0)
    steps = np.arange(chunk)
    valid = active[:, None] & (start[:, None] + steps < np.where(active, read[owner], 0)[:, None])
    rows = np.minimum(base[:, None] + steps, len(buffer.features) - 1)
    rows_t = torch.from_numpy(rows).to(device)
    valid_t = torch.from_numpy(valid).to(device)
    inputs = buffer.features[rows_t] * valid_t[..., None]
    return inputs, rows_t, valid_t


def carry(state, keep: np.ndarray):
    """The state for the next chunk: detached (no gradient crosses a chunk boundary), zero in the
    slots that start a new series (`keep` False). nn.LSTM: (h, c); nn.GRU: h; each (layers, slots, hidden)."""
    if state is None:
        return None
    tensors = state if isinstance(state, tuple) else (state,)
    mask = torch.from_numpy(keep).to(tensors[0].device, tensors[0].dtype)[None, :, None]
    kept = tuple(t.detach() * mask for t in tensors)
    return kept if isinstance(state, tuple) else kept[0]


def head_inputs(buffer: SeriesBuffer, rows: torch.Tensor, horizon: int) -> tuple:
    """For forecast origins after flat buffer rows `rows` (m,): the last values (m, 1), the known
    features of the `horizon` steps after (m, horizon, n_known) or None, the embedding rows or None."""
    values = buffer.values[rows][:, None]
    future = None
    if buffer.n_known:
        index = rows[:, None] + 1 + torch.arange(horizon, device=rows.device)
        future = buffer.features[index][..., -buffer.n_known:]
    codes = None if buffer.series_of is None else buffer.series_of[rows]
    return values, future, codes


@dataclass
class Chunks:
    """An epoch of stateful training: series i read over its first `read[i]` points (its training
    part less the horizon: each is a forecast origin whose targets lie in the training part), in
    chunks of `chunk` steps, `slots` series side by side; gradients clipped to norm `clip`."""

    buffer: SeriesBuffer
    read: np.ndarray
    horizon: int
    chunk: int
    slots: int
    clip: float
    lanes: Lanes = field(init=False)

    def __post_init__(self):
        self.read = np.asarray(self.read, dtype=np.int64)
        self.lanes = pack(self.read, self.chunk, min(self.slots, max(int((self.read > 0).sum()), 1)))

    @property
    def windows(self) -> int:
        """Forecast origins (targets of `horizon` points) an epoch trains on."""
        return int(self.read.sum())

    @property
    def steps(self) -> int:
        return self.lanes.steps

    @property
    def batch_size(self) -> int:
        """Origins per step on average (the progress line's count)."""
        return max(math.ceil(self.windows / max(self.steps, 1)), 1)


def run_epoch(model, optimizer, batches: Chunks, loss_fn, generator: torch.Generator, runtime,
              on_step: Callable[[int, int, torch.Tensor], None] | None = None,
              deadline: float = math.inf, on_batch: Callable[[], None] | None = None) -> float:
    """One pass over every series' training part, chunk by chunk with the state carried; returns the
    mean training loss per origin. The same contract as train.run_epoch (`generator` unused: the
    order of the chunks is the order of time)."""
    model.train()
    buffer, lanes, horizon = batches.buffer, batches.lanes, batches.horizon
    device = buffer.features.device
    offsets = torch.arange(1, horizon + 1, device=device)
    total, seen, state = torch.zeros((), device=device), 0, None
    for step in range(lanes.steps):
        if step > 0 and time.perf_counter() > deadline:
            break
        series = lanes.series[step]
        inputs, rows, valid = gather(buffer, series, lanes.start[step], batches.chunk, batches.read)
        state = carry(state, ~lanes.fresh[step] & (series >= 0))
        origins = rows[valid]                                          # (m,) flat rows of the origins
        targets = buffer.values[origins[:, None] + offsets]            # (m, horizon)
        with runtime.autocast_context():
            states, state = model.encoder(inputs, state)               # (slots, chunk, width)
            prediction = model.decode(states[valid], *head_inputs(buffer, origins, horizon))
        loss = loss_fn(prediction.float(), targets, None, targets.new_ones(len(targets), 1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if batches.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), batches.clip)
        optimizer.step()
        if on_batch is not None:
            on_batch()
        total += loss.detach() * len(origins)
        seen += len(origins)
        if on_step is not None:
            on_step(step + 1, lanes.steps, total)
    return float(total) / max(seen, 1)


@torch.no_grad()
def forecast_origins(model, buffer: SeriesBuffer, origins: np.ndarray, index: np.ndarray | None = None,
                     runtime=None, chunk: int = FORECAST_CHUNK, slots: int = FORECAST_SLOTS) -> torch.Tensor:
    """Scaled forecasts (n, horizon), or (n, horizon, Q), fp32 (fp64 for a float64 model and
    buffer), of a stateful model (a Forecaster or an Ensemble of them: the median of the members)
    from n cut points: forecast j reads series `index[j]` (default: series j) from its start up
    to, not including, point `origins[j]` (>= 1); `slots` series side by side."""
    origins = np.asarray(origins, dtype=np.int64)
    index = np.arange(len(origins)) if index is None else np.asarray(index, dtype=np.int64)
    if len(origins) and origins.min() < 1:
        raise ValueError("a stateful forecast needs at least one point of history")
    members = list(model.members) if hasattr(model, "members") else [model]
    out = [_member_origins(member, buffer, origins, index, runtime, chunk, slots) for member in members]
    if len(out) == 1:
        forecasts = out[0]
    else:
        forecasts = torch.stack(out).quantile(0.5, dim=0)
        if model.levels is not None:
            forecasts = keep_monotone(forecasts, model.median_index)
    if getattr(model, "corrections", None) is not None:  # conformal: scores in per-series scaled units
        forecasts = widen(forecasts.float(), model.corrections, model.pairs, model.median_index,
                          torch.ones(len(forecasts), 1, device=forecasts.device))
    return forecasts


def _member_origins(model, buffer: SeriesBuffer, origins: np.ndarray, index: np.ndarray, runtime,
                    chunk: int, slots: int = FORECAST_SLOTS) -> torch.Tensor:
    """forecast_origins for one Forecaster: one pass per series up to its latest origin (all its
    origins read the states of that one pass), then the head at each origin."""
    device = buffer.features.device
    read = np.zeros(len(buffer.lengths), dtype=np.int64)
    np.maximum.at(read, index, origins)
    lanes = pack(read, chunk, min(slots, max(int((read > 0).sum()), 1)))
    position = origins - 1                                 # the last point each forecast reads
    at_step = lanes.first_step[index] + position // chunk
    order = np.argsort(at_step, kind="stable")
    bounds = np.searchsorted(at_step[order], np.arange(lanes.steps + 1))
    slot, within = lanes.slot_of[index], position % chunk
    summaries: torch.Tensor | None = None
    autocast = runtime.autocast_context() if runtime is not None else torch.autocast(device.type, enabled=False)
    was_training = model.training
    model.eval()
    state = None
    with autocast:
        for step in range(lanes.steps):
            series = lanes.series[step]
            inputs, _, _ = gather(buffer, series, lanes.start[step], chunk, read)
            state = carry(state, ~lanes.fresh[step] & (series >= 0))
            states, state = model.encoder(inputs, state)           # (slots, chunk, width)
            if summaries is None:
                width = states.shape[-1]
                summaries = torch.zeros(len(origins), width, device=device, dtype=states.dtype)
            wanted = order[bounds[step]: bounds[step + 1]]
            if len(wanted):
                pick = torch.from_numpy(wanted).to(device)
                summaries[pick] = states[torch.from_numpy(slot[wanted]).to(device),
                                         torch.from_numpy(within[wanted]).to(device)]
        if summaries is None:   # no origins
            summaries = torch.zeros(0, model.encoder.hidden_size, device=device, dtype=buffer.features.dtype)
        rows = torch.from_numpy(buffer.offsets[index] + position).to(device)
        prediction = model.decode(summaries, *head_inputs(buffer, rows, model.horizon))
    model.train(was_training)
    return prediction.to(torch.promote_types(prediction.dtype, torch.float32))  # fp32 (fp64 stays)


def validation_loss(model, buffer: SeriesBuffer, origins: np.ndarray, index: np.ndarray, horizon: int,
                    loss_fn, runtime) -> float:
    """The training loss on the early-stopping windows (origins = each validated series' training
    part), the state warmed over the training part first."""
    if len(origins) == 0:
        return 0.0
    prediction = forecast_origins(model, buffer, origins, index, runtime)
    rows = torch.from_numpy(buffer.offsets[index] + origins).to(buffer.features.device)
    targets = buffer.values[rows[:, None] + torch.arange(horizon, device=rows.device)]
    return float(loss_fn(prediction, targets, None, targets.new_ones(len(targets), 1)))
