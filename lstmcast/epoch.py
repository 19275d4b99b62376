"""One epoch of the windowed recipe: the windows it trains on (Batches) and the pass over them in
shuffled batches (run_epoch). train.py's recipe runs it; tbptt.py holds the stateful recipe's own.
Under torchrun every rank draws the same batches and trains on its slice of each (distributed.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .losses import Loss, window_loss
from .runtime import Runtime
from .windows import SeriesBuffer


@dataclass
class Batches:
    """The windows an epoch trains on, and how: `starts` of `buffer` with `horizon` targets each, in
    shuffled batches of `batch_size`, gradients clipped to norm `clip` (0: not clipped); with
    `per_epoch`, an epoch is that many of them, drawn anew each epoch."""

    buffer: SeriesBuffer
    starts: torch.Tensor
    horizon: int
    batch_size: int
    clip: float
    per_epoch: int | None = None

    @property
    def windows(self) -> int:
        """Windows one epoch trains on."""
        return len(self.starts) if self.per_epoch is None else min(self.per_epoch, len(self.starts))

    @property
    def steps(self) -> int:
        return math.ceil(self.windows / self.batch_size)


def draw(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k of range(n) in a random order, without replacement. A few of very many (windows_per_epoch
    of a large file's windows): the first k distinct values of uniform draws, O(k) per epoch instead
    of a permutation of all n; otherwise the first k of a permutation."""
    if k * 4 > n:
        return torch.randperm(n, generator=generator)[:k]
    picked = torch.empty(0, dtype=torch.long)
    while len(picked) < k:
        stream = torch.cat([picked, torch.randint(n, (k - len(picked) + k // 8 + 16,), generator=generator)])
        values, at = torch.sort(stream, stable=True)
        first = torch.ones(len(values), dtype=torch.bool)
        first[1:] = values[1:] != values[:-1]
        picked = stream[torch.sort(at[first]).values]   # each value's first draw, in draw order
    return picked[:k]


def run_epoch(model, optimizer, batches: Batches, loss_fn: Loss, generator: torch.Generator,
              runtime: Runtime, on_step: Callable[[int, int, torch.Tensor], None] | None = None,
              deadline: float = math.inf, on_batch: Callable[[], None] | None = None) -> float:
    """One pass over the training windows (or `batches.per_epoch` of them) in a random order;
    returns the mean training loss. Past `deadline` (time.perf_counter) no further step starts.

    The hot loop has no host sync: losses are summed on the device and read once at the end
    (and every LOSS_EVERY steps when someone is listening). Under torchrun (runtime.ranks) every
    rank draws the same global batch and trains on its slice; the gradients are the batch's.
    """
    model.train()
    buffer, starts, ranks = batches.buffer, batches.starts, runtime.ranks
    # The epoch's windows in their drawn order, gathered once: each batch is then a slice (a view).
    order = starts[draw(len(starts), batches.windows, generator).to(starts.device, non_blocking=True)]
    steps, seen = batches.steps, 0
    total = torch.zeros((), device=buffer.device)
    for step, rows in enumerate(torch.split(order, batches.batch_size), start=1):
        if step > 1 and ranks.past(deadline):
            break
        batch, share = ranks.shard(rows)  # one process: all of rows, share 1
        inputs, targets = buffer.windows(batch, batches.horizon)  # (B, L, F), (B, H)
        loss = window_loss(model, inputs, targets, loss_fn, runtime, buffer.future(batch), buffer.series(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ranks.average(model, share)
        if batches.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), batches.clip)
        optimizer.step()
        if on_batch is not None:  # the linear schedule
            on_batch()
        total.add_(loss.detach(), alpha=len(rows) * share)
        seen += len(rows)
        if on_step is not None:
            on_step(step, steps, ranks.running(total))
    return float(ranks.sum(total)) / max(seen, 1)
