"""The time budget (`train.time_budget`, `--time-budget 10m`): training ends inside it.

The clock starts when `lstmcast train` starts reading the data. A small part of the budget is kept
for what follows the last epoch (validation metrics, calibration, the run files); the rest is shared
among the ensemble members still to train, so a member that stops early leaves its time to the
next. Inside a member, an epoch starts only if the time its previous epoch took still fits, and a
refit epoch only if its own estimate fits; a step loop also stops at the member's deadline (the
first epoch of a huge data set). A member that cannot fit even one epoch is not started: the run
keeps the members it finished (at least one), and metrics.json says what the budget cut.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import LstmcastError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(value, key: str = "train.time_budget") -> float | None:
    """'10m', '90s', '1h30m', '2h', 600 (seconds) -> seconds; None, 'none', 'null' -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    if isinstance(value, bool):
        raise LstmcastError(f"{key}: {value!r} is not a duration; e.g. 10m, 90s, 1h30m or seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            try:
                seconds = float(text)
            except ValueError:
                raise LstmcastError(f"{key}: '{value}' is not a duration; e.g. 10m, 90s, 1h30m, "
                                    f"or a number of seconds") from None
        else:
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise LstmcastError(f"{key}: {value!r} must be a positive duration; e.g. 10m, 90s or 1h30m")
    return seconds


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


# Epochs a member needs to get near its best (early stopping ended the M3 monthly members at 6 to
# 9 epochs of ~300 steps); with less time per member, fewer members are trained (train._plan_members).
EPOCHS_PER_MEMBER = 8
RESERVE_SHARE = 0.03   # of the budget, kept for the validation metrics and the run files
RESERVE_MIN = 1.0      # seconds


@dataclass
class Budget:
    """The run's clock. `seconds` None: no budget (every check passes)."""

    seconds: float | None
    started: float = field(default_factory=time.perf_counter)
    cut: list[str] = field(default_factory=list)   # what the budget stopped, for metrics.json
    finish: float = 0.0   # measured estimate of the wrap-up after training (see finish_estimate)
    # Under torchrun every rank has its own clock, and rank 0's decides (distributed.Ranks.agree).
    agree: Callable[[object], object] = field(default=lambda value: value, repr=False)

    @property
    def limited(self) -> bool:
        return self.seconds is not None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        """Seconds left for training (the reserve kept apart)."""
        if self.seconds is None:
            return math.inf
        reserve = max(RESERVE_MIN, RESERVE_SHARE * self.seconds, self.finish)
        return self.seconds - reserve - self.elapsed()

    def finish_estimate(self, members: int, validation_seconds: float, save_seconds: float) -> None:
        """The wrap-up after the last epoch, from what its parts took during training: member
        selection forecasts each member's validation windows once and the validation metrics once
        more (`validation_seconds`: the slowest validation pass of a member), then model.pt is
        written (`save_seconds`); kept out of the time left for training when above the fixed reserve."""
        self.finish = (2 * members + 1) * validation_seconds + 2 * save_seconds

    def member_deadline(self, members_left: int) -> float:
        """perf_counter time by which the member starting now should be done: an equal share of
        what is left for it and the members after it."""
        if self.seconds is None:
            return math.inf
        return time.perf_counter() + max(self.left(), 0.0) / max(members_left, 1)

    def decide(self, value):
        """`value`, a decision read off the clock, as rank 0 took it. Without a budget no decision
        depends on the clock (every deadline is infinite), so nothing is exchanged."""
        return value if self.seconds is None else self.agree(value)

    def note(self, what: str) -> None:
        self.cut.append(what)

    def summary(self) -> dict:
        return {"seconds": self.seconds, "used": round(self.elapsed(), 2), "cut": list(self.cut)}
