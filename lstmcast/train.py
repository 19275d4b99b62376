"""Training, written out: read -> split -> scale -> device tensors -> epochs -> run directory.

The core never prints. Progress goes to the optional `on_event` callback as the small event
objects defined here; the CLI renders them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from . import __version__, rundir, timegrid
from .checkpoint import BEST, LAST, atomic_write_text, load_checkpoint, save_checkpoint
from .config import Config, config_from_dict, quantile_pairs
from .covariates import FeatureSpec
from .data import SeriesSet, read_series
from .device import describe, fallbacks, resolve_device, seed_everything
from .errors import LstmcastError
from .losses import Loss, MaseLoss, PinballLoss, make_loss, seasonal_scale  # noqa: F401  (re-exported)
from .metrics import compare, pair_name, quantile_metrics, season_length
from .model import Ensemble, Forecaster, count_parameters, forecast_windows
from .precision import autocast_dtype, bf16_kernel, fp32_math, tf32_state
from .precision import name as precision_name
from .quantiles import conformal_correction, interval_scores
from .scaling import Scaler, check_magnitude, unscale
from .windows import N_FEATURES, SeriesBuffer, available_memory, buffer_bytes, window_batch_bytes

# Keys that may differ between an interrupted run and its --resume: they change how long or
# where it trains, not what it computes.
RESUMABLE_KEYS = {"train.epochs", "train.patience", "train.device"}
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


def minimum_length(horizon: int) -> int:
    """Points a series needs for one training window: `horizon` targets and 1 input."""
    return horizon + 1


def validated(lengths: np.ndarray, horizon: int) -> np.ndarray:
    """Series long enough to hold out their last `horizon` points and still train on the rest.

    Shorter series (horizon + 1 .. 2 x horizon points) train on all their points and are not
    validated: they still help the global model and still get forecasts.
    """
    return lengths >= 2 * horizon + 1


def calibrated(lengths: np.ndarray, horizon: int) -> np.ndarray:
    """Series long enough (3 x horizon + 1 points) to hold out a calibration window after their
    early-stopping window and still keep one training window (model.conformal)."""
    return lengths >= 3 * horizon + 1


@dataclass
class Parts:
    """Each series split in time, as point counts from its start.

    [0, train) trains the model. A validated series' early-stopping window [train, train + horizon)
    chooses the best epoch and drives the learning-rate schedule. With model.conformal a calibrated
    series' calibration window, its last horizon points after the early-stopping window, fits the
    conformal corrections and nothing else: the only scores neither trained on nor selected on.
    """

    horizon: int
    train: np.ndarray       # (n,) points in the training part (before any refit)
    validated: np.ndarray   # (n,) bool: has an early-stopping window
    calibrated: np.ndarray  # (n,) bool: has a calibration window (and so an early-stopping one)

    @property
    def stop_end(self) -> np.ndarray:
        """(n,) exclusive end of each series' early-stopping window (its training part's end where
        it has none)."""
        return self.train + self.horizon * self.validated


def split_parts(lengths: np.ndarray, horizon: int, conformal: bool = False) -> Parts:
    """Without model.conformal: validated series (>= 2 x horizon + 1 points) early-stop on their last
    horizon, shorter ones train on everything. With it, series of >= 3 x horizon + 1 points also
    calibrate on their last horizon and early-stop on the horizon before; those of 2 x horizon + 1
    .. 3 x horizon points early-stop only (a calibration window would leave no training window)."""
    is_validated = validated(lengths, horizon)
    is_calibrated = calibrated(lengths, horizon) & bool(conformal)
    train = lengths - horizon * is_validated - horizon * is_calibrated
    return Parts(horizon, train, is_validated, is_calibrated)


def resolve_config(config: Config, series: SeriesSet) -> Config:
    """Record what was detected (columns, lookback, frequency, day/month order) so the saved
    config is fully explicit and predict reads new data the same way."""
    cols = series.columns
    data = dataclasses.replace(config.data, id_col=cols.id_col if cols.id_in_input else None,
                               time_col=cols.time_col, target=list(cols.targets),
                               lookback=config.data.resolved_lookback, freq=series.freq,
                               dayfirst=config.data.dayfirst if series.dayfirst is None else series.dayfirst)
    return dataclasses.replace(config, data=data)


def check_lengths(series: SeriesSet, horizon: int, path: Path, conformal: bool = False) -> None:
    need = minimum_length(horizon)
    short = [(sid, len(v)) for sid, v in zip(series.ids, series.values) if len(v) < need]
    if short:
        sid, n = short[0]
        more = f" (and {len(short) - 1} more)" if len(short) > 1 else ""
        raise LstmcastError(f"{path}: series '{sid}' has {n} points{more}; training needs at least "
                            f"{need} (horizon + 1, horizon {horizon}); lower --horizon or give "
                            f"it more history")
    if not validated(series.lengths(), horizon).any():
        raise LstmcastError(f"{path}: no series has the {2 * horizon + 1} points (2 x horizon + 1) "
                            f"needed to hold out a validation part; lower --horizon")
    if conformal and not calibrated(series.lengths(), horizon).any():
        raise LstmcastError(f"{path}: model.conformal needs a series of {3 * horizon + 1} points "
                            f"(3 x horizon + 1): its last horizon calibrates the intervals, the horizon "
                            f"before chooses the best epoch; lower --horizon, give more history or set "
                            f"model.conformal=false")


def check_lookbacks(series: SeriesSet, config: Config, path: Path) -> None:
    """Lookbacks the user gave (data.lookback, train.ensemble_lookbacks, train.members) longer than
    every series: the steps past the longest series are padding in every window, for nothing but
    time, which is most likely a typo. The default, 3 x horizon, may exceed short series (padded)."""
    given = [config.member(k).data.lookback for k in range(1, config.train.ensemble + 1)]
    given = [lookback for lookback in given if lookback is not None]
    lengths = series.lengths()
    longest = int(lengths.max())
    if given and max(given) > longest:
        sid = series.ids[int(lengths.argmax())]
        where = ("--lookback" if config.data.lookback == max(given)
                 else "the lookbacks in train.ensemble_lookbacks / train.members")
        raise LstmcastError(f"{path}: lookback {max(given)} is longer than the longest series ('{sid}', "
                            f"{longest} points): every window would start with at least "
                            f"{max(given) - longest} steps of padding; lower {where} to at most {longest}")


def check_memory(series: SeriesSet, config: Config) -> None:
    """Refuse, before allocating, a lookback (or horizon) whose series buffer and one batch of
    windows alone would not fit in this machine's available memory: a typo such as
    --lookback 200000000 would otherwise fail slowly or take the machine down."""
    available = available_memory()
    if available is None:
        return
    lookback, horizon = resolve_config(config, series).input_length, config.data.horizon
    width = N_FEATURES + len(config.data.covariates)  # calendar columns only add to this
    batch = max(config.member(k).train.batch_size for k in range(1, config.train.ensemble + 1))
    need = buffer_bytes(series.lengths(), lookback, width) + window_batch_bytes(batch, lookback, horizon, width)
    if need > available:
        gib = 1024 ** 3
        default = all(config.member(k).data.lookback is None for k in range(1, config.train.ensemble + 1))
        what = f"lookback {lookback} (3 x horizon {horizon})" if default else f"lookback {lookback}"
        raise LstmcastError(f"{what} needs ~{need / gib:.3g} GiB for the series buffer and one batch of "
                            f"windows, more than this machine's {available / gib:.3g} GiB of available "
                            f"memory; lower {'--horizon' if default else '--lookback'}")


def data_fingerprint(series: SeriesSet) -> str:
    digest = hashlib.sha256()
    digest.update(series.freq.encode())
    for sid, start, values in zip(series.ids, series.starts, series.values):
        digest.update(f"{sid}|{start.isoformat()}|{len(values)}".encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    if series.covariates is not None:  # without covariates: the same fingerprint as before them
        digest.update("|".join(series.covariate_names).encode())
        for covariates in series.covariates:
            digest.update(np.ascontiguousarray(covariates).tobytes())
    return digest.hexdigest()


def _config_differences(a: Config, b: Config) -> list[tuple[str, object, object]]:
    flat_a = {f"{s}.{k}": v for s, sec in a.to_dict().items() for k, v in sec.items()}
    flat_b = {f"{s}.{k}": v for s, sec in b.to_dict().items() for k, v in sec.items()}
    return [(k, flat_a[k], flat_b[k]) for k in flat_a if flat_a[k] != flat_b[k]]


def _rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def window_loss(model, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: Loss,
                autocast: torch.dtype | None, future: torch.Tensor | None = None,
                series: torch.Tensor | None = None) -> torch.Tensor:
    """The loss on the window-normalised scale: every window weighs the same, whatever its level."""
    with torch.autocast(inputs.device.type, dtype=autocast or torch.float32,
                        enabled=autocast is not None):
        prediction, loc, scale = model.normalized(inputs, future, series)
    return loss_fn(prediction.float(), (targets - loc) / scale, inputs, scale)


def run_epoch(model, optimizer, buffer: SeriesBuffer, starts: torch.Tensor, horizon: int,
              batch_size: int, loss_fn, clip: float, autocast: torch.dtype | None,
              generator: torch.Generator, on_step: Callable[[int, int, torch.Tensor], None] | None
              = None) -> float:
    """One pass over the training windows in a random order; returns the mean training loss.

    The hot loop has no host sync: losses are summed on the device and read once at the end
    (and every LOSS_EVERY steps when someone is listening).
    """
    model.train()
    device = starts.device
    order = torch.randperm(len(starts), generator=generator).to(device, non_blocking=True)
    steps = math.ceil(len(starts) / batch_size)
    total = torch.zeros((), device=device)
    for step, rows in enumerate(torch.split(order, batch_size), start=1):
        batch = starts[rows]
        inputs, targets = buffer.windows(batch, horizon)  # (B, L, F), (B, H)
        loss = window_loss(model, inputs, targets, loss_fn, autocast, buffer.future(batch), buffer.series(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        total += loss.detach() * len(rows)
        if on_step is not None:
            on_step(step, steps, total)
    return float(total) / max(len(starts), 1)


@torch.no_grad()
def validation_loss(model, buffer: SeriesBuffer, starts: torch.Tensor, horizon: int, loss_fn,
                    autocast: torch.dtype | None, batch_size: int = 4096) -> float:
    """The training loss (window-normalised units) on the validation windows."""
    model.eval()
    total = torch.zeros((), device=starts.device)
    for chunk in torch.split(starts, batch_size):
        inputs, targets = buffer.windows(chunk, horizon)
        total += window_loss(model, inputs, targets, loss_fn, autocast, buffer.future(chunk),
                             buffer.series(chunk)) * len(chunk)
    return float(total) / max(len(starts), 1)


def _check_resume(out: Path, config: Config, fingerprint: str, data_path: Path) -> dict:
    """The interrupted run's last.pt, if it may be continued with this config and data."""
    state = load_checkpoint(out / LAST)
    changed = [d for d in _config_differences(config_from_dict(state["config"]), config)
               if d[0] not in RESUMABLE_KEYS]
    if changed:
        key, was, now = changed[0]
        raise LstmcastError(f"--resume: '{key}' was {was!r} in {out}, now {now!r}; only "
                            f"{', '.join(sorted(RESUMABLE_KEYS))} may change when resuming")
    if state["data_fingerprint"] != fingerprint:
        raise LstmcastError(f"--resume: {data_path} differs from the data {out} was trained on; "
                            f"start a new run (--overwrite or another --out)")
    return state


@dataclass
class _Fit:
    """Everything one training run mutates, so it can be saved to and restored from last.pt."""

    model: Forecaster
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    generator: torch.Generator
    best_weights: dict
    best_val: float = math.inf
    best_epoch: int = 0
    best_lr: float = math.nan  # the learning rate the best epoch trained with (refit starts there)
    bad_epochs: int = 0
    epoch: int = 0  # last finished epoch

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError:  # one parameter group: written before biases stopped decaying
            raise LstmcastError("--resume: last.pt was written by an older lstmcast (other optimizer "
                                "parameter groups); start a new run (--overwrite)") from None
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], self.generator)
        self.best_val, self.best_epoch = state["best_val"], state["best_epoch"]
        self.bad_epochs, self.epoch = state["bad_epochs"], state["epoch"]
        self.best_weights = state["best_weights"]
        self.best_lr = state.get("best_lr", self.optimizer.param_groups[0]["lr"])

    def resumable(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": _rng_state(self.generator),
                "epoch": self.epoch, "best_val": self.best_val, "best_weights": self.best_weights,
                "best_epoch": self.best_epoch, "best_lr": self.best_lr, "bad_epochs": self.bad_epochs}


def train(data_path: str | Path, out_dir: str | Path, config: Config | None = None, *,
          resume: bool = False, overwrite: bool = False,
          on_event: Callback | None = None) -> TrainResult:
    """Train a forecaster on the CSV at `data_path` and write the run directory `out_dir`.

    Holds the run directory's lock throughout (rundir.RunLock), after repairing what killed
    runs left behind."""
    data_path, out = Path(data_path), Path(out_dir)
    if out.is_symlink():  # the run lives where the link points; the link stays
        out = Path(os.path.realpath(out))
    rundir.check_flags(out, resume, overwrite)
    with rundir.RunLock(out):
        for event in rundir.recover(out):
            if on_event is not None:
                on_event(event)
        rundir.check_data(data_path, out, resume)
        return _train_locked(data_path, out, config or Config(), resume, overwrite, on_event)


def _train_locked(data_path: Path, out: Path, config: Config, resume: bool, overwrite: bool,
                  on_event: Callback | None) -> TrainResult:
    # Everything the user can get wrong is checked before anything is written.
    series = read_series(data_path, id_col=config.data.id_col, time_col=config.data.time_col,
                         target=config.data.target, fill=config.data.fill,
                         covariates=config.data.covariates, freq=config.data.freq,
                         dayfirst=config.data.dayfirst)
    check_magnitude(config.data.scaling, series.ids, series.values, data_path)
    check_memory(series, config)
    if not resume:  # a resumed run's saved config has its default lookback written out
        check_lookbacks(series, config, data_path)
    config = resolve_config(config, series)
    check_lengths(series, config.data.horizon, data_path, config.model.conformal)
    work = rundir.prepare(out, resume, overwrite)
    fingerprint = data_fingerprint(series)
    state = _check_resume(out, config, fingerprint, data_path) if resume else None
    device = resolve_device(config.train.device)
    autocast = autocast_dtype(config.train.precision, device, config.cells_in_use())

    fresh = rundir.create(work)
    try:
        with fp32_math(config.train.precision):
            result = _train_in(work, series, config, device, autocast, fingerprint, state, on_event)
    except LstmcastError:
        # A run that failed for a reason the user must fix leaves nothing half-made behind; a
        # resumed run keeps its earlier epochs.
        if work != out or (fresh and not resume):
            shutil.rmtree(work, ignore_errors=True)
        raise
    except BaseException:
        if work != out:  # an interrupted --overwrite: the previous run stays as it was
            shutil.rmtree(work, ignore_errors=True)
        raise
    rundir.finish(work, out)
    result.run_dir = out
    return result


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices only. Biases (the forget-gate bias set to 1
    among them), other vectors (peephole diagonals, norm gains) and embedding tables get none:
    decaying them pulls them to 0, which for the forget-gate bias undoes its initialisation."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            plain = parameter.ndim < 2 or id(parameter) in embeddings
            (no_decay if plain else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr)


def _new_fit(config: Config, member: int, device: torch.device, dims: dict) -> _Fit:
    """A fresh member: `config` is that member's own (Config.member)."""
    seed = config.train.seed + member - 1
    seed_everything(seed)
    model = Forecaster(config.model, config.data.horizon, config.data.resolved_lookback, **dims).to(device)
    optimizer = make_optimizer(model, config.train.lr, config.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.train.lr_factor, patience=config.train.lr_patience)
    return _Fit(model, optimizer, scheduler, torch.Generator().manual_seed(seed),
                copy.deepcopy(model.state_dict()))


def _train_in(work: Path, series: SeriesSet, config: Config, device: torch.device,
              autocast: torch.dtype | None, fingerprint: str, state: dict | None,
              on_event: Callback | None) -> TrainResult:
    """Scale, lay the series out on the device, train each ensemble member, write the run files.

    model.pt holds the best weights of every member trained so far; last.pt the finished members
    plus the full state of the one in training, so --resume can pick up inside any member.
    """
    emit = on_event or (lambda event: None)
    horizon, members = config.data.horizon, config.train.ensemble
    lengths = series.lengths()
    parts = split_parts(lengths, horizon, config.model.conformal)
    is_validated, train_lengths = parts.validated, parts.train
    scaler = Scaler.fit(config.data.scaling, series.ids,
                        [v[:n] for v, n in zip(series.values, train_lengths)])
    scaled = [(v - loc) / scale for v, loc, scale in zip(series.values, scaler.loc, scaler.scale)]
    features = FeatureSpec.fit(config, series, train_lengths)
    dims = features.dims()
    codes = np.arange(len(series)) if dims["n_series"] and config.model.series_embedding else None
    # Padded for the longest member lookback; each member reads it through its own window length.
    buffer = SeriesBuffer.build(scaled, config.input_length, device, features.extra(series),
                                n_known=features.n_known, horizon=horizon, codes=codes)
    refits = [config.member(m).train.refit_epochs > 0 for m in range(1, members + 1)]
    meta = {"config": config.to_dict(), "scaler": scaler.to_dict(),
            "columns": series.columns.to_dict(), "freq": series.freq,
            "series_ids": list(series.ids),
            "last_timestamps": [series.last_time(i).isoformat() for i in range(len(series))],
            "versions": {"lstmcast": __version__, "torch": str(torch.__version__)},
            "data_fingerprint": fingerprint, "features": features.to_dict(),
            "seen": seen_by_run(series, parts, refits)}
    atomic_write_text(work / "config.yaml", config.to_yaml())

    # With refit, `done` holds the refitted weights that forecast and `held_out` the weights
    # chosen on the validation part, which alone give honest validation metrics.
    done: list[dict] = [] if state is None else list(state["members_done"])
    held_out: list[dict] = [] if state is None else list(state["members_held_out"])
    history: list[dict] = [] if state is None else [dict(r) for r in state["history"]]
    for member in range(len(done) + 1, members + 1):
        own = config.member(member)  # its lookback, model and training keys (train.members)
        tc, per_series, refit = own.train, own.train.max_windows_per_series, own.train.refit_epochs
        loss_fn = make_loss(tc.loss, season_length(series.freq), config.model.levels)
        fit = _new_fit(own, member, device, dims)
        view = buffer.with_lookback(own.data.resolved_lookback)
        train_starts = view.training_starts(train_lengths, horizon, per_series)
        val_starts = stopping_starts(view, parts)
        if state is not None and state["member"] == member:
            fit.restore(state)
        steps = math.ceil(len(train_starts) / tc.batch_size)
        recipe = ", ".join(f"{key}={str(now).lower() if isinstance(now, bool) else now}"
                           for key, _, now in _config_differences(config, own)
                           if key not in ("train.members", "train.ensemble_lookbacks"))
        emit(TrainStart(member, members, describe(device), precision_name(autocast, config.train.precision, device),
                        len(series), len(train_starts), count_parameters(fit.model),
                        tc.epochs, steps, fit.epoch + 1, recipe))
        while fit.epoch < tc.epochs and fit.bad_epochs < tc.patience:
            fit.epoch += 1
            epoch, started = fit.epoch, time.perf_counter()

            def on_step(step, steps, total, epoch=epoch, member=member, n_windows=len(train_starts),
                        batch_size=tc.batch_size):
                report = step % LOSS_EVERY == 0 or step == steps
                seen = min(step * batch_size, n_windows)
                emit(Step(member, epoch, step, steps, float(total) / seen if report else None))

            train_loss = run_epoch(fit.model, fit.optimizer, view, train_starts, horizon,
                                   tc.batch_size, loss_fn, tc.clip, autocast,
                                   fit.generator, on_step if on_event else None)
            val_loss = validation_loss(fit.model, view, val_starts, horizon, loss_fn, autocast)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                raise LstmcastError(f"training diverged at epoch {epoch} (train loss {train_loss}, "
                                    f"validation loss {val_loss}); lower train.lr (now {tc.lr:g})" + (
                                        "" if config.data.scaling == "standard" else
                                        f" or use data.scaling=standard (now {config.data.scaling})"))
            trained_lr = fit.optimizer.param_groups[0]["lr"]
            fit.scheduler.step(val_loss)
            improved = val_loss < fit.best_val
            if improved:
                fit.best_val, fit.best_epoch, fit.bad_epochs = val_loss, epoch, 0
                fit.best_lr = trained_lr
                fit.best_weights = copy.deepcopy(fit.model.state_dict())
                save_checkpoint({**meta, "models": [*done, fit.best_weights]}, work / BEST)
            else:
                fit.bad_epochs += 1
            seconds, lr = time.perf_counter() - started, fit.optimizer.param_groups[0]["lr"]
            history.append({"member": member, "epoch": epoch, "train_loss": train_loss,
                            "val_loss": val_loss, "lr": lr, "seconds": round(seconds, 4)})
            _write_history(work / "history.csv", history)
            save_checkpoint({**meta, **fit.resumable(), "member": member, "members_done": done,
                             "members_held_out": held_out, "history": history}, work / LAST)
            emit(EpochEnd(member, members, epoch, tc.epochs, train_loss, val_loss, lr,
                          seconds, improved))
        held_out.append(fit.best_weights)
        if refit:
            # The best weights with a fresh optimizer at the learning rate they were trained with:
            # not the moments and reduced rate of the last, worse epochs. Every window trains, the
            # early-stopping and calibration windows too (the corrections are computed before).
            fit.model.load_state_dict(fit.best_weights)
            optimizer = make_optimizer(fit.model, fit.best_lr, tc.weight_decay)
            all_starts = view.training_starts(lengths, horizon, per_series)
            for extra in range(1, refit + 1):
                started = time.perf_counter()
                train_loss = run_epoch(fit.model, optimizer, view, all_starts, horizon,
                                       tc.batch_size, loss_fn, tc.clip, autocast,
                                       fit.generator)
                history.append({"member": member, "epoch": fit.epoch + extra, "train_loss": train_loss,
                                "val_loss": float("nan"), "lr": optimizer.param_groups[0]["lr"],
                                "seconds": round(time.perf_counter() - started, 4)})
                _write_history(work / "history.csv", history)
            save_checkpoint({**meta, "models": [*done, fit.model.state_dict()]}, work / BEST)
        done.append(copy.deepcopy(fit.model.state_dict()) if refit else fit.best_weights)

    model = Ensemble.from_weights(config, held_out, dims=dims).to(device)
    val_starts = stopping_starts(buffer, parts)
    metrics = validation_metrics(model, buffer, val_starts, is_validated, series, scaler, horizon,
                                 autocast, config.model.quantiles, parts.stop_end[is_validated])
    metrics["validation_windows"] = _validation_label(parts, any(refits))
    metrics.update({"members": members, "refit_epochs": config.train.refit_epochs, "best_epoch": fit.best_epoch,
                    "best_val_loss": fit.best_val,
                    "epochs_run": fit.epoch, "stopped_early": fit.bad_epochs >= tc.patience,
                    "device": describe(device)})
    metrics.update(_arithmetic(config, device, autocast))
    if config.model.conformal:
        # From the weights chosen before any refit, on the calibration windows: the only errors
        # that neither trained these weights nor chose their epoch.
        metrics["conformal"] = calibrate(model, buffer, calibration_starts(buffer, parts), horizon, autocast)
        metrics["conformal"]["windows"] = (
            "calibration windows: the last horizon of each series of at least 3 x horizon + 1 points, "
            "after its early-stopping window; neither trained the weights calibrated nor chose their epoch"
            + ("; refit trained on them afterwards" if any(refits) else ""))
        save_checkpoint({**meta, "models": done, "conformal": metrics["conformal"]}, work / BEST)
    atomic_write_text(work / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return TrainResult(work, fit.best_epoch, fit.best_val, fit.epoch, metrics["stopped_early"], metrics)


def stopping_starts(buffer: SeriesBuffer, parts: Parts) -> torch.Tensor:
    """One window per validated series whose targets are its early-stopping window."""
    index = np.flatnonzero(parts.validated)
    return buffer.origin_starts(parts.train[index], index)


def calibration_starts(buffer: SeriesBuffer, parts: Parts) -> torch.Tensor:
    """One window per calibrated series whose targets are its calibration window (its last horizon)."""
    index = np.flatnonzero(parts.calibrated)
    return buffer.origin_starts(parts.stop_end[index], index)


def seen_by_run(series: SeriesSet, parts: Parts, refits: list[bool]) -> dict:
    """The checkpoint's "seen" (format 4), what evaluate labels in-sample by: per series (in
    series_ids order) the timestamp of the last point of its training part, of its early-stopping
    window and of its calibration window (None: it has none); per ensemble member whether refit
    then trained on every point, up to last_timestamps."""
    starts = pd.DatetimeIndex(series.starts)

    def last(counts: np.ndarray, keep: np.ndarray) -> list[str | None]:
        ends = timegrid.shift(series.grid, starts, np.maximum(counts, 1) - 1)
        return [end.isoformat() if has else None for end, has in zip(ends, keep)]

    everyone = np.ones(len(series), dtype=bool)
    return {"train_end": last(parts.train, everyone),
            "early_stopping_end": last(parts.stop_end, parts.validated),
            "calibration_end": last(series.lengths(), parts.calibrated), "refit": list(refits)}


def _validation_label(parts: Parts, refit: bool) -> dict:
    """What metrics.json's "validation" (and "intervals", "quantile_loss") scores are."""
    where = ("the horizon before each calibrated series' calibration window, else the last horizon"
             if parts.calibrated.any() else "the last horizon of each validated series")
    note = (f"early-stopping windows ({where}): they chose the best epoch and drove the learning-rate "
            f"schedule, so these scores are in-sample for model selection, not held out")
    if refit:
        note += "; refit then trained on them"
    return {"kind": "early_stopping", "in_sample": True, "n_series": int(parts.validated.sum()),
            "scores": ["validation", "intervals", "quantile_loss"], "note": note}


def _arithmetic(config: Config, device: torch.device, autocast: torch.dtype | None) -> dict:
    """What the run's numbers were computed with: precision, kernels, TF32, fallbacks."""
    out = {"precision": precision_name(autocast, config.train.precision, device)}
    if device.type == "cuda":
        out["tf32"] = tf32_state()
        if autocast is not None:
            out["kernels"] = {cell: bf16_kernel(cell, device)[1] for cell in config.cells_in_use()}
    out["fallbacks"] = fallbacks()
    return out


def _write_history(path: Path, history: list[dict]) -> None:
    lines = ["member,epoch,train_loss,val_loss,lr,seconds"]
    lines += [f"{h['member']},{h['epoch']},{h['train_loss']:.8g},{h['val_loss']:.8g},{h['lr']:.6g},"
              f"{h['seconds']}" for h in history]
    atomic_write_text(path, "\n".join(lines) + "\n")


def validation_metrics(model, buffer: SeriesBuffer, val_starts: torch.Tensor, is_validated: np.ndarray,
                       series: SeriesSet, scaler: Scaler, horizon: int,
                       autocast: torch.dtype | None, quantiles: list[float] | None = None,
                       ends: np.ndarray | None = None) -> dict:
    """Model vs naive baselines on the early-stopping windows, original units: the `horizon` points
    before `ends` (per validated series; default: their last `horizon`). With quantiles also
    interval coverage and pinball losses (of the uncalibrated model)."""
    scaled = forecast_windows(model, buffer.model_inputs, val_starts, autocast).cpu().double().numpy()
    forecast = unscale(scaled, scaler.loc[is_validated], scaler.scale[is_validated])
    point = forecast if forecast.ndim == 2 else forecast[..., model.median_index]
    values = [v for v, keep in zip(series.values, is_validated) if keep]
    ends = np.array([len(v) for v in values]) if ends is None else ends
    actual = np.stack([v[end - horizon: end] for v, end in zip(values, ends)])
    histories = [v[: end - horizon] for v, end in zip(values, ends)]
    season = season_length(series.freq)
    metrics = {"horizon": horizon, "season_length": season, "n_series": len(series),
               "n_validated": len(values), "validation": compare(actual, point, histories, season)}
    if forecast.ndim == 3:
        metrics.update(quantile_metrics(actual, forecast, model.levels, quantiles))
    return metrics


@torch.no_grad()
def calibrate(model: Ensemble, buffer: SeriesBuffer, val_starts: torch.Tensor, horizon: int,
              autocast: torch.dtype | None) -> dict:
    """Conformalized quantile regression on the calibration windows `starts` (train.calibration_starts:
    neither trained on nor used to choose the epoch): per symmetric pair of levels and per step, the
    correction (window-normalised units) that makes the interval cover its nominal share of their
    targets. Plain lists, for the checkpoint and metrics.json."""
    quantiles = forecast_windows(model, buffer.model_inputs, val_starts, autocast)  # (n, horizon, Q) scaled
    _, targets = buffer.windows(val_starts, horizon)                          # (n, horizon)
    scale = model.conformal_scale(buffer.inputs(val_starts))                   # (n, 1)
    pairs = quantile_pairs(model.levels)
    corrections = []
    for lo, hi in pairs:
        scores = interval_scores(quantiles, targets, (model.levels.index(lo), model.levels.index(hi)), scale)
        corrections.append(conformal_correction(scores, round(hi - lo, 12)).cpu().tolist())
    return {"pairs": [[lo, hi] for lo, hi in pairs], "names": [pair_name(lo, hi) for lo, hi in pairs],
            "corrections": corrections, "n_calibration": len(val_starts)}
