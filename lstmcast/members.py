"""The run's members: what every member of a run shares (RunState), how many of them and how many
epochs the time budget fits (plan_members, replan, plan_linear, cut), which of them are kept
(select, keep), which classical forecasts join them (select_classical, keep_classical), and
the run files that record it (config.yaml's text, history.csv).

train.py's recipe calls these; nothing here trains.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import classical
from .budget import EPOCHS_PER_MEMBER, Budget
from .checkpoint import BEST, atomic_write_text, save_checkpoint
from .config import Config, load_config
from .data import SeriesSet
from .events import Callback, Note
from .fitstate import Fit
from .mase import history_scale
from .metrics import season_length
from .model import Ensemble
from .run import RunMeta
from .runtime import Runtime
from .scaling import Scaler
from .selection import Combination, Selection, choose_classical, choose_members
from .validation import Computed, Parts, validation_forecasts
from .windows import SeriesBuffer


@dataclass
class RunState:
    """What every member trains on, built once (train._prepare), and what the run has done so far.

    With refit, `done` holds the refitted weights that forecast and `held_out` the weights chosen on
    the validation part, which alone give honest validation metrics."""

    work: Path
    config: Config
    series: SeriesSet
    parts: Parts
    scaler: Scaler
    dims: dict
    buffer: SeriesBuffer   # padded for the longest member lookback; each member reads its own view
    meta: RunMeta          # the run's keys in every checkpoint
    refits: list[bool]     # per member: does it refit
    done: list[dict]       # weights that forecast, of the finished members
    held_out: list[dict]   # weights chosen on the early-stopping windows, of the finished members
    history: list[dict]    # history.csv's rows
    choices: list = dataclasses.field(default_factory=list)   # the automatic recipe's (auto.Choice)
    budget: Budget = dataclasses.field(default_factory=lambda: Budget(None))
    # What each finished member really ran, where it differs from its config (the budget cut its
    # epochs or skipped its refit): {member: {"train.epochs": 7, ...}}, recorded in config.yaml.
    ran: dict = dataclasses.field(default_factory=dict)
    planned: int = 0       # members the budget leaves room for (0: not planned yet, all of them)
    timings: tuple[float, float] = (0.0, 0.0)   # slowest validation pass, slowest last.pt write (seconds)
    writes: bool = True    # whether this process writes the run files (under torchrun: rank 0 alone)
    placement: str = ""    # why the series buffer is where it is (windows.place)
    first_epoch: float | None = None   # perf_counter time this process started its first epoch

    def save_best(self, weights: dict) -> None:
        """model.pt: the finished members' weights and `weights` for the member in training."""
        self.save(BEST, self.meta.to_checkpoint([*self.done, weights]))

    def save(self, name: str, checkpoint: dict) -> None:
        if self.writes:
            save_checkpoint(checkpoint, self.work / name)

    def write_text(self, name: str, text: str) -> None:
        if self.writes:
            atomic_write_text(self.work / name, text)

    def log(self, row: dict) -> None:
        """One more row of history.csv (the file is rewritten whole, atomically)."""
        self.history.append(row)
        if self.writes:
            write_history(self.work / "history.csv", self.history)


def plan_members(run: RunState, epoch: float, left: float, emit: Callback) -> None:
    """After the first member's second epoch (`epoch` seconds, `left` seconds of budget when the member
    started): as many members as leave each about EPOCHS_PER_MEMBER epochs, at least one."""
    members = run.config.train.ensemble
    need = EPOCHS_PER_MEMBER * epoch
    run.planned = run.budget.decide(max(1, min(members, int(left // need))))
    if run.planned < members:
        run.budget.note(f"{run.planned} of {members} members planned: a member needs about {need:.0f}s "
                        f"({EPOCHS_PER_MEMBER} epochs of {epoch:.1f}s) and {left:.0f}s were left")
        emit(Note(f"time budget: {run.budget.cut[-1]}"))


def replan(run: RunState) -> None:
    """Before each further member: as many more members as the time left fits, each needing what
    the finished members needed on average (their epochs, refits included) at the latest member's
    epoch time: a machine that slows down (another job starts) trains fewer members for longer
    instead of many members cut to one epoch each."""
    rows = [row for row in run.history if row["member"] <= len(run.done)]
    epochs = len(rows) / max(len(run.done), 1)
    latest = [row["seconds"] for row in rows if row["member"] == len(run.done)]
    seconds = float(np.mean(latest or [row["seconds"] for row in rows])) if rows else 0.0
    # Rounded: a member with at least half the time the others took still adds to the median.
    room = int(max(run.budget.left(), 0.0) / max(epochs * seconds, 1e-9) + 0.5)
    run.planned = run.budget.decide(max(len(run.done), min(run.config.train.ensemble, len(run.done) + room)))


def plan_linear(run: RunState, job, fit: Fit, deadline: float, last: float, emit: Callback) -> int:
    """The linear schedule under a time budget, after the first epoch: the epochs that fit the
    member's share (its refit included) become its train.epochs, and the decay spans them."""
    tc = job.config.train
    fits = run.budget.decide(fit.epoch + int(max(deadline - time.perf_counter(), 0.0) / max(last, 1e-9))
                             - tc.refit_epochs)
    epochs = max(min(tc.epochs, fits), fit.epoch)
    if epochs < tc.epochs:
        fit.scheduler.total = epochs * job.batches.steps
        run.ran.setdefault(job.member, {})["train.epochs"] = epochs
        emit(Note(f"time budget: member {job.member} plans {epochs} epochs of {last:.1f}s in its share; "
                  f"its learning rate decays to 0 over them"))
    return epochs


def cut(run: RunState, member: int, ran: dict, message: str, emit: Callback) -> None:
    """The budget changed what member `member` runs: say so and record it for config.yaml."""
    run.ran.setdefault(member, {}).update(ran)
    run.budget.note(message)
    emit(Note(f"time budget: {message}"))


def select(run: RunState, runtime: Runtime) -> Selection:
    """train.select: each member's forecasts on the early-stopping windows (held-out weights),
    the subset whose median scores best (selection.choose_members)."""
    ensemble = Ensemble.from_weights(run.config, run.held_out, dims=run.dims).to(runtime.device)
    forecasts, actual, histories = [], None, None
    for member in ensemble.members:
        forecast, actual, histories = validation_forecasts(Ensemble([member]), run.buffer, run.parts,
                                                           run.series, run.scaler, runtime)
        forecasts.append(forecast if forecast.ndim == 2 else forecast[..., member.median_index])
    scale = history_scale(histories, season_length(run.series.freq))
    return choose_members(np.stack(forecasts), actual, scale)


def select_classical(run: RunState, runtime: Runtime) -> tuple[Combination, Computed]:
    """model.classical with train.select: which classical forecasts lower the validation MASE of the
    median with the (kept) members' median, on the early-stopping windows (choose_classical); and
    the forecasts it computed, for validation_metrics."""
    ensemble = Ensemble.from_weights(run.config, run.held_out, dims=run.dims).to(runtime.device)
    neural, actual, histories = validation_forecasts(ensemble, run.buffer, run.parts, run.series, run.scaler,
                                                     runtime)
    season = season_length(run.series.freq)
    methods = run.config.model.classical
    found = dict(zip(methods, classical.forecasts(methods, histories, run.parts.horizon, season,
                                                  classical.history_points(run.config.input_length, season))))
    return (choose_classical(neural, found, actual, history_scale(histories, season)),
            Computed(neural, actual, histories, found))


def keep_classical(run: RunState, methods: tuple[str, ...]) -> None:
    """From now on the run combines exactly `methods` (train.select off: already chosen)."""
    run.config = load_config(None, {"model.classical": list(methods) or None, "train.select": False},
                             base=run.config)
    run.meta = dataclasses.replace(run.meta, config=run.config)
    run.write_text("config.yaml", config_text(run.config, run.choices))


def keep(run: RunState, keep: list[int]) -> None:
    """From now on the run is members `keep` (0-based, of those trained): the config lists exactly
    them, each with its seed and what the budget changed (so --config RUN/config.yaml trains them
    again), with train.select off (already chosen); config.yaml and the checkpoints' config follow."""
    config = run.config
    entries = [{**config.member_keys(k + 1), "train.seed": config.member_seed(k + 1), **run.ran.get(k + 1, {})}
               for k in keep]
    run.config = load_config(None, {"train.members": entries, "train.ensemble": len(entries),
                                    "train.ensemble_lookbacks": None, "train.select": False}, base=config)
    run.done, run.held_out = [run.done[k] for k in keep], [run.held_out[k] for k in keep]
    run.refits = [run.refits[k] for k in keep]
    run.ran = {}
    run.meta = dataclasses.replace(run.meta, config=run.config, seen={**run.meta.seen, "refit": list(run.refits)})
    run.write_text("config.yaml", config_text(run.config, run.choices))


def config_text(config: Config, choices: list) -> str:
    """config.yaml: every key, after the automatic recipe's reasons as comments."""
    head = ["# Chosen by train.recipe auto from the data (every key below is now given, so",
            "# `--config` this file trains the same recipe):"] if choices else []
    head += [f"#   {choice.line()}" for choice in choices]
    return "\n".join(head + [config.to_yaml()]) if head else config.to_yaml()


def write_history(path: Path, history: list[dict]) -> None:
    lines = ["member,epoch,train_loss,val_loss,lr,seconds"]
    lines += [f"{h['member']},{h['epoch']},{h['train_loss']:.8g},{h['val_loss']:.8g},{h['lr']:.6g},"
              f"{h['seconds']}" for h in history]
    atomic_write_text(path, "\n".join(lines) + "\n")
