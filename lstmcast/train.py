"""Training, written out: read -> split -> scale -> device tensors -> epochs -> run directory.

The core never prints. Progress goes to the optional `on_event` callback as the small event
objects of events.py (re-exported here); the CLI renders them.

Before anything is written, preflight.py checks the data and the config (and a --resume) and
resolves what was detected. The recipe (_train_in): _prepare (split, scale, features, device
buffer) -> per ensemble member _fit_member (its _epoch loop, then _refit) -> _finalize (validation
metrics, conformal corrections, metrics.json). One pass over the windows is epoch.py's run_epoch.
What the members share, how many of them and how many epochs the time budget fits, and which are
kept live in members.py; the time split and what is measured on it in validation.py, the losses
in losses.py, a member's resumable state in fitstate.py, device, precision and the torchrun rank
in runtime.py (distributed.py: what the ranks exchange).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__, auto, distributed, members, rundir, tbptt, timegrid
from .budget import Budget, format_duration, parse_duration
from .checkpoint import BEST, LAST
from .config import Config
from .covariates import FeatureSpec
from .data import SeriesSet, read_series
from .device import describe
from .distributed import Ranks
from .epoch import Batches, run_epoch  # noqa: F401  (Batches re-exported: benchmarks)
from .errors import LstmcastError
from .events import LOSS_EVERY, Callback, EpochEnd, Note, Step, TrainResult, TrainStart  # noqa: F401  (re-exported)
from .fitstate import Fit, LinearDecay, make_optimizer, new_fit, parameter_groups  # noqa: F401  (parameter_groups re-exported)
from .losses import Loss, MaseLoss, PinballLoss, make_loss, seasonal_scale, window_loss  # noqa: F401  (re-exported)
from .members import RunState
from .metrics import season_length
from .model import Ensemble, count_parameters
from .precision import fp32_math
from .preflight import (
    check_lengths,
    check_lookbacks,
    check_memory,
    check_resume,
    config_differences,
    data_fingerprint,
    resolve_config,
)
from .run import RunMeta
from .runtime import Runtime
from .scaling import Scaler, check_magnitude, to_scaled
from .validation import (  # noqa: F401  (minimum_length .. calibrate re-exported: tests, benchmarks)
    CALIBRATION_WINDOWS,
    Parts,
    calibrate,
    calibrated,
    calibration_origins,
    calibration_starts,
    minimum_length,
    sampled,
    seen_by_run,
    split_parts,
    stopping_starts,
    validated,
    validation_forecasts,
    validation_label,
    validation_loss,
    validation_metrics,
)
from .windows import N_FEATURES, SeriesBuffer, buffer_bytes, place


def train(data_path: str | Path, out_dir: str | Path, config: Config | None = None, *,
          resume: bool = False, overwrite: bool = False,
          on_event: Callback | None = None) -> TrainResult:
    """Train a forecaster on the CSV at `data_path` and write the run directory `out_dir`.

    `config` None: the defaults, or with `resume` the config the run was started with (its
    config.yaml), so continuing a run needs only its directory. Holds the run directory's lock
    throughout (rundir.RunLock), after repairing what killed runs left behind.

    Under torchrun (WORLD_SIZE > 1) every rank trains one global model and rank 0 alone holds the
    lock, writes and reports (distributed.py)."""
    from .spatial import wants_grid
    ranks = Ranks.from_env()
    if wants_grid(config, out_dir, resume):  # gridded data (data.grid): a ConvLSTM run, spatial/
        if ranks.active:
            raise LstmcastError("gridded data (data.grid, the ConvLSTM) trains in one process; run it "
                                "without torchrun")
        from .spatial.fit import train_grid
        return train_grid(data_path, out_dir, config, resume=resume, overwrite=overwrite, on_event=on_event)
    if not ranks.active:
        return rundir.locked(data_path, out_dir, config, resume, overwrite, on_event, _train_locked)
    setting = (config or (rundir.saved_config(Path(out_dir)) if resume else None) or Config()).train.device
    with ranks.group(distributed.device_type(setting)):
        try:
            return rundir.locked(data_path, out_dir, config, resume, overwrite, on_event if ranks.writes else None,
                                 functools.partial(_train_locked, ranks=ranks), lock=ranks.writes)
        except LstmcastError as exc:
            ranks.fail(exc)
            raise


def _train_locked(data_path: Path, out: Path, config: Config, resume: bool, overwrite: bool,
                  on_event: Callback | None, ranks: Ranks | None = None) -> TrainResult:
    ranks = ranks or Ranks()
    # the clock starts with the reading; under torchrun rank 0's decides
    budget = Budget(parse_duration(config.train.time_budget), agree=ranks.agree)
    with ranks.together():  # everything the user can get wrong is checked before anything is written
        series, config, choices = _checked(data_path, config, resume, ranks)
    fingerprint = data_fingerprint(series)
    ranks.same(fingerprint + config.to_yaml(),
               f"{data_path}: the ranks read different data or resolved different configs; every rank must "
               f"read the same file with the same options (and, for --resume, see the same run directory)")
    with ranks.together():  # rank 0 checks the run directory; every rank reads a --resume's state
        work = rundir.prepare(out, resume, overwrite) if ranks.writes else out
        state = check_resume(out, config, fingerprint, data_path) if resume else None
        runtime = Runtime.resolve(config.train.device, config.train.precision, config.cells_in_use(), ranks,
                                  config.member_shapes())
    with ranks.together():  # apart: a failure of another rank above leaves no new directory behind
        fresh = rundir.create(work) if ranks.writes else False
    emit = on_event or (lambda event: None)
    for choice in choices:
        emit(Note(f"auto: {choice.line()}"))
    if budget.limited and choices:
        emit(Note(f"time budget {format_duration(budget.seconds)} (train.time_budget, --time-budget)"))
    try:
        with fp32_math(config.train.precision):
            result = _train_in(work, series, config, runtime, fingerprint, state, on_event, budget, choices)
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


def _checked(data_path: Path, config: Config, resume: bool, ranks: Ranks) -> tuple[SeriesSet, Config, list]:
    """The series read and validated, and the config resolved for them (with the automatic
    recipe's choices); a user error if anything is wrong with either."""
    series = read_series(data_path, id_col=config.data.id_col, time_col=config.data.time_col,
                         target=config.data.target, fill=config.data.fill,
                         covariates=config.data.covariates, freq=config.data.freq,
                         dayfirst=config.data.dayfirst)
    config, choices = auto.resolve(config, series)
    check_magnitude(config.data.scaling, series.ids, series.values, data_path)
    check_memory(series, config)
    if not resume:  # a resumed run's saved config has its default lookback written out
        check_lookbacks(series, config, data_path)
    config = resolve_config(config, series)
    check_lengths(series, config.data.horizon, data_path, config.model.conformal)
    distributed.check_config(config, ranks)
    return series, config, choices


# --- the recipe: prepare -> fit each member (epochs, then refit) -> finalize ------------------


@dataclass
class _Member:
    """One ensemble member's recipe: its own config (Config.member), loss and windows."""

    member: int
    config: Config
    loss: Loss
    view: SeriesBuffer      # the run's buffer read with this member's lookback
    batches: Batches | tbptt.Chunks  # its training windows (train.tbptt: its chunks of whole series)
    val_starts: torch.Tensor


def _train_in(work: Path, series: SeriesSet, config: Config, runtime: Runtime, fingerprint: str,
              state: dict | None, on_event: Callback | None, budget: Budget | None = None,
              choices: list | None = None) -> TrainResult:
    """Scale, lay the series out on the device, train each ensemble member, write the run files.

    model.pt holds the best weights of every member trained so far; last.pt the finished members
    plus the full state of the one in training, so --resume can pick up inside any member. Each
    member gets an equal share of the time budget left for it and the members after it.
    """
    emit = on_event or (lambda event: None)
    run = _prepare(work, series, config, fingerprint, runtime, state, choices or [])
    run.budget = budget or Budget(None)
    if run.buffer.compute is not None:
        emit(Note(f"series buffer in host memory: {run.placement}"))
    n_members = run.planned = config.train.ensemble
    for member in range(len(run.done) + 1, n_members + 1):
        if run.done and run.budget.limited:
            members.replan(run)
        if member > run.planned:
            run.budget.note(f"members {member}-{n_members} not trained: the time left would not fit another "
                            f"member like the ones trained")
            emit(Note(f"time budget: {run.budget.cut[-1]}"))
            break
        plans = state is None and member == 1
        # The member that sizes the ensemble may use the whole budget until it has (after its
        # second epoch): an equal share of the ensemble's default size could end it after one
        # epoch on a slow machine, and every member after it would then plan one epoch too.
        deadline = run.budget.member_deadline(1 if plans else run.planned - member + 1)
        job = _member(run, member)
        fit = new_fit(job.config, config.member_seed(member), runtime.device, run.dims, job.batches.steps)
        if state is not None and state["member"] == member:
            fit.restore(state)
        runtime.ranks.same_weights(fit.model)
        _fit_member(run, job, fit, runtime, emit, on_event is not None, deadline, plans)
    return _finalize(run, fit, runtime, emit)


def _prepare(work: Path, series: SeriesSet, config: Config, fingerprint: str, runtime: Runtime,
             state: dict | None, choices: list) -> RunState:
    """Split, scale, build the features and the device buffer; write config.yaml."""
    horizon, n_members = config.data.horizon, config.train.ensemble
    parts = split_parts(series.lengths(), horizon, config.model.conformal)
    scaler = Scaler.fit(config.data.scaling, series.ids,
                        [v[:n] for v, n in zip(series.values, parts.train)])
    scaled = to_scaled(series.values, scaler.loc, scaler.scale)
    features = FeatureSpec.fit(config, series, parts.train)
    dims = features.dims()
    codes = np.arange(len(series)) if dims["n_series"] and config.model.series_embedding else None
    extra = features.extra(series)
    width = N_FEATURES + (extra[0].shape[1] if extra else 0)
    host, placement = place(config.train.buffer, runtime.device,
                            buffer_bytes(series.lengths(), config.input_length, width), config.train.tbptt > 0)
    buffer = SeriesBuffer.build(scaled, config.input_length, runtime.device, extra,
                                n_known=features.n_known, horizon=horizon, codes=codes, host=host)
    refits = [config.member(m).train.refit_epochs > 0 for m in range(1, n_members + 1)]
    meta = RunMeta(config, scaler, series.columns, series.freq, list(series.ids),
                   timegrid.isoformats(series.last_times()),
                   {"lstmcast": __version__, "torch": str(torch.__version__)}, fingerprint, features,
                   seen_by_run(series, parts, refits))
    done, held_out, history = ([], [], []) if state is None else (
        list(state["members_done"]), list(state["members_held_out"]), [dict(r) for r in state["history"]])
    run = RunState(work, config, series, parts, scaler, dims, buffer, meta, refits, done, held_out, history,
                   choices, writes=runtime.ranks.writes, placement=placement)
    if state is None or not (work / "config.yaml").exists():
        run.write_text("config.yaml", members.config_text(config, choices))
    return run


def _member(run: RunState, member: int) -> _Member:
    own = run.config.member(member)  # its lookback, model and training keys (train.members)
    tc, horizon = own.train, run.config.data.horizon
    loss = make_loss(tc.loss, season_length(run.series.freq), run.config.model.levels)
    view = run.buffer.with_lookback(own.data.resolved_lookback)
    if tc.tbptt:  # stateful: every point of the training part but the last horizon is an origin
        batches = tbptt.Chunks(view, np.maximum(run.parts.train - horizon, 0), horizon, tc.tbptt,
                               tc.batch_size, tc.clip)
    else:
        starts = view.training_starts(run.parts.train, horizon, tc.max_windows_per_series)
        batches = Batches(view, starts, horizon, tc.batch_size, tc.clip, tc.windows_per_epoch)
    stopping = sampled(stopping_starts(view, run.parts), tc.validation_series, tc.seed)
    return _Member(member, own, loss, view, batches, stopping)


def _fit_member(run: RunState, job: _Member, fit: Fit, runtime: Runtime, emit: Callback, listening: bool,
                deadline: float = math.inf, plan_members: bool = False) -> None:
    """Train one member: epochs until train.epochs, train.patience or its `deadline` (the time
    budget: an epoch starts only if one as long as its last fits), then its refit epochs (if they
    fit too). `plan_members`: after its first epoch, size the ensemble to the budget."""
    started_member, left = time.perf_counter(), run.budget.left()
    tc = job.config.train
    recipe = ", ".join(f"{key}={str(now).lower() if isinstance(now, bool) else now}"
                       for key, _, now in config_differences(run.config, job.config)
                       if key not in ("train.members", "train.ensemble_lookbacks"))
    n_windows = job.batches.windows if tc.tbptt else len(job.batches.starts)
    emit(TrainStart(job.member, run.config.train.ensemble, describe(runtime.device), runtime.name,
                    len(run.series), n_windows, count_parameters(fit.model), tc.epochs, job.batches.steps,
                    fit.epoch + 1, recipe))
    last, first, refit, epochs = 0.0, fit.epoch, tc.refit_epochs, tc.epochs
    plan = tc.schedule == "linear" and run.budget.limited
    while fit.epoch < epochs and fit.bad_epochs < tc.patience:
        if plan and fit.epoch == first + 1:
            epochs, plan = members.plan_linear(run, job, fit, deadline, last, emit), False
            continue
        if fit.epoch > first and run.budget.decide(time.perf_counter() + last * (1 + refit) > deadline):
            members.cut(run, job.member, {"train.epochs": fit.epoch}, f"member {job.member} stopped after epoch "
                 f"{fit.epoch}: another would not fit its share of the budget", emit)
            break
        started = time.perf_counter()
        _epoch(run, job, fit, runtime, emit, listening, deadline)
        last = time.perf_counter() - started
        # The first epoch also warms up (allocations, compilation): plan from the second.
        if plan_members and run.budget.limited and fit.epoch == first + 2 and run.config.train.ensemble > 1:
            members.plan_members(run, last, left, emit)
            deadline = started_member + max(left, 0.0) / run.planned
    run.held_out.append(fit.best_weights)
    if refit and run.budget.decide(time.perf_counter() + refit * last > deadline):  # keeps time to refit
        members.cut(run, job.member, {"train.refit_epochs": 0}, f"member {job.member}: its refit epoch skipped, "
             f"it would not fit its share of the budget", emit)
        run.refits[job.member - 1], refit = False, 0
        run.meta = dataclasses.replace(run.meta, seen={**run.meta.seen, "refit": list(run.refits)})
    if refit:
        _refit(run, job, fit, runtime)
    run.done.append(copy.deepcopy(fit.model.state_dict()) if refit else fit.best_weights)


def _epoch(run: RunState, job: _Member, fit: Fit, runtime: Runtime, emit: Callback, listening: bool,
           deadline: float = math.inf) -> None:
    """One epoch: train, validate, step the schedule, keep the best, save, report."""
    tc = job.config.train
    fit.epoch += 1
    epoch, started = fit.epoch, time.perf_counter()
    if run.first_epoch is None:
        run.first_epoch = started
    on_step = _step_reporter(emit, job, epoch) if listening else None
    epoch_of = tbptt.run_epoch if tc.tbptt else run_epoch
    train_loss = epoch_of(fit.model, fit.optimizer, job.batches, job.loss, fit.generator, runtime, on_step,
                          deadline, getattr(fit.scheduler, "batch", None))
    trained = time.perf_counter()
    if tc.tbptt:  # the state warmed over each validated series' training part, then its forecast
        index = np.flatnonzero(run.parts.validated)
        val_loss = tbptt.validation_loss(fit.model, job.view, run.parts.train[index], index,
                                         job.batches.horizon, job.loss, runtime)
    else:
        val_loss = validation_loss(fit.model, job.view, job.val_starts, job.batches.horizon, job.loss, runtime)
    val_done = time.perf_counter()
    val_loss = runtime.ranks.agree(val_loss)  # rank 0's: early stopping and the schedule decide alike
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        raise LstmcastError(f"training diverged at epoch {epoch} (train loss {train_loss}, "
                            f"validation loss {val_loss}); lower train.lr (now {tc.lr:g})" + (
                                "" if run.config.data.scaling == "standard" else
                                f" or use data.scaling=standard (now {run.config.data.scaling})"))
    trained_lr = fit.optimizer.param_groups[0]["lr"]
    fit.scheduler.step(val_loss)
    improved = fit.record(val_loss, epoch, trained_lr)
    if improved:
        run.save_best(fit.best_weights)
    seconds, lr = time.perf_counter() - started, fit.optimizer.param_groups[0]["lr"]
    run.log({"member": job.member, "epoch": epoch, "train_loss": train_loss,
             "val_loss": val_loss, "lr": lr, "seconds": round(seconds, 4)})
    saving = time.perf_counter()
    run.save(LAST, run.meta.to_checkpoint(None, **fit.resumable(), member=job.member, members_done=run.done,
                                          members_held_out=run.held_out, history=run.history))
    run.timings = (max(run.timings[0], val_done - trained), max(run.timings[1], time.perf_counter() - saving))
    run.budget.finish_estimate(max(run.planned, job.member), *run.timings)
    emit(EpochEnd(job.member, run.config.train.ensemble, epoch, tc.epochs, train_loss, val_loss, lr,
                  seconds, improved))


def _step_reporter(emit: Callback, job: _Member, epoch: int) -> Callable[[int, int, torch.Tensor], None]:
    """run_epoch's on_step: a Step event per batch, with the running loss every LOSS_EVERY steps."""
    n_windows, batch_size = job.batches.windows, job.batches.batch_size

    def on_step(step: int, steps: int, total: torch.Tensor) -> None:
        report = step % LOSS_EVERY == 0 or step == steps
        seen = min(step * batch_size, n_windows)
        emit(Step(job.member, epoch, step, steps, float(total) / seen if report else None))
    return on_step


def _refit(run: RunState, job: _Member, fit: Fit, runtime: Runtime) -> None:
    """The best weights with a fresh optimizer at the learning rate they were trained with: not the
    moments and reduced rate of the last, worse epochs. Every window trains, the early-stopping and
    calibration windows too (the corrections are computed before)."""
    tc, horizon = job.config.train, job.batches.horizon
    fit.model.load_state_dict(fit.best_weights)
    linear = isinstance(fit.scheduler, LinearDecay)  # replays the schedule's last epoch, on every window
    lr = fit.scheduler.base[0] * job.batches.steps / fit.scheduler.total if linear else fit.best_lr
    optimizer = make_optimizer(fit.model, lr, tc.weight_decay)
    decay = LinearDecay(optimizer, tc.refit_epochs * job.batches.steps) if linear else None
    if tc.tbptt:
        everything = tbptt.Chunks(job.view, np.maximum(run.series.lengths() - horizon, 0), horizon, tc.tbptt,
                                  tc.batch_size, tc.clip)
    else:
        everything = Batches(job.view, job.view.training_starts(run.series.lengths(), horizon,
                                                                tc.max_windows_per_series),
                             horizon, tc.batch_size, tc.clip, tc.windows_per_epoch)
    epoch_of = tbptt.run_epoch if tc.tbptt else run_epoch
    for extra in range(1, tc.refit_epochs + 1):
        started = time.perf_counter()
        train_loss = epoch_of(fit.model, optimizer, everything, job.loss, fit.generator, runtime,
                               on_batch=decay.batch if decay else None)
        run.log({"member": job.member, "epoch": fit.epoch + extra, "train_loss": train_loss,
                 "val_loss": float("nan"), "lr": optimizer.param_groups[0]["lr"],
                 "seconds": round(time.perf_counter() - started, 4)})
    run.save_best(fit.model.state_dict())


def _timing(run: RunState) -> dict:
    """metrics.json's "timing" (seconds, this process): from train's start (reading the data) to its
    first epoch (the set-up), and from the first epoch to model.pt written (the epochs, their
    checkpoints and the wrap-up)."""
    now = time.perf_counter()
    first = run.first_epoch if run.first_epoch is not None else now
    return {"before_first_epoch": round(first - run.budget.started, 3), "from_first_epoch": round(now - first, 3)}


def _finalize(run: RunState, fit: Fit, runtime: Runtime, emit: Callback) -> TrainResult:
    """Which members forecast (the budget's cuts, train.select), then validation metrics (and
    conformal corrections) of the held-out weights; config.yaml, model.pt and metrics.json."""
    trained, select = list(range(len(run.done))), run.config.train.select
    if len(trained) < run.config.train.ensemble or run.ran:
        members.keep(run, trained)   # config.yaml records what was trained, to train it again
    selection = None
    if select and len(run.done) > 1:
        selection = runtime.ranks.agree(members.select(run, runtime))
        if len(selection.keep) < len(run.done):
            kept = ", ".join(str(k + 1) for k in selection.keep)
            emit(Note(f"kept member{'s' if len(selection.keep) > 1 else ''} {kept} of the {len(run.done)} trained "
                      f"(validation MASE {selection.scores[selection.keep]:.4f}, all members "
                      f"{selection.scores[tuple(trained)]:.4f}; train.select)"))
            members.keep(run, list(selection.keep))
    combination = computed = None
    if select and run.config.model.classical:
        # Under torchrun every rank computed the same forecasts; the choice is rank 0's.
        combination, computed = members.select_classical(run, runtime)
        combination = runtime.ranks.agree(combination)
        scores = combination.scores
        joined = " and ".join(combination.keep) or "none"
        emit(Note(f"classical forecasts: {joined} joined the network's median (validation MASE "
                  f"{scores[combination.keep]:.4f}, the network alone {scores[()]:.4f}; model.classical "
                  f"offered {', '.join(run.config.model.classical)})"))
        members.keep_classical(run, combination.keep)
    config, parts = run.config, run.parts
    model = Ensemble.from_weights(config, run.held_out, dims=run.dims).to(runtime.device)
    metrics = validation_metrics(model, run.buffer, parts, run.series, run.scaler, runtime,
                                 config.model.quantiles, config.model.classical, config.input_length, computed)
    metrics["validation_windows"] = validation_label(parts, any(run.refits))
    patience = config.member(config.train.ensemble).train.patience  # of the last member
    metrics.update({"members": config.train.ensemble, "refit_epochs": config.train.refit_epochs,
                    "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val,
                    "epochs_run": fit.epoch, "stopped_early": fit.bad_epochs >= patience,
                    "device": describe(runtime.device)})
    metrics.update(runtime.arithmetic(config.cells_in_use()))
    if config.model.conformal:
        # From the weights chosen before any refit, on the calibration windows: the only errors
        # that neither trained these weights nor chose their epoch.
        metrics["conformal"] = calibrate(model, run.buffer, calibration_starts(run.buffer, parts), parts.horizon,
                                         runtime, calibration_origins(parts) if config.train.tbptt else None)
        metrics["conformal"]["windows"] = CALIBRATION_WINDOWS + (
            "; refit trained on them afterwards" if any(run.refits) else "")
        run.meta = dataclasses.replace(run.meta, conformal=metrics["conformal"])
    if selection is not None:
        metrics["selection"] = selection.report()
    if combination is not None:
        metrics["classical"] = combination.report()
    metrics["recipe"] = [choice.line() for choice in run.choices]
    metrics["time_budget"] = run.budget.summary()
    run.save(BEST, run.meta.to_checkpoint(run.done))
    metrics["timing"] = _timing(run)
    run.write_text("metrics.json", json.dumps(metrics, indent=2) + "\n")
    return TrainResult(run.work, fit.best_epoch, fit.best_val, fit.epoch, metrics["stopped_early"], metrics)


