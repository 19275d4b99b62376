"""What training reports while it runs (TrainStart, Step, EpochEnd: the `on_event` callback's
events, which the CLI renders) and what it returns (TrainResult)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

LOSS_EVERY = 50  # steps between running-loss reports (each one is a device sync)


@dataclass
class TrainStart:
    member: int       # ensemble member, 1-based (always 1 without an ensemble)
    members: int
    device: str
    precision: str
    n_series: int
    n_windows: int
    parameters: int
    epochs: int
    steps_per_epoch: int
    first_epoch: int  # > 1 when resuming
    recipe: str = ""  # the member's own keys (train.members, ensemble_lookbacks), e.g. "train.loss=mase"


@dataclass
class Note:
    """A line for the user: an automatic-recipe choice with its reason, what the time budget cut."""

    message: str


@dataclass
class Step:
    member: int
    epoch: int
    step: int
    steps: int
    loss: float | None  # running mean of this epoch, every LOSS_EVERY steps; else None


@dataclass
class EpochEnd:
    member: int
    members: int
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    lr: float
    seconds: float
    improved: bool


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int         # of the last member
    best_val_loss: float    # of the last member
    epochs_run: int         # of the last member
    stopped_early: bool
    metrics: dict


Callback = Callable[[object], None]
