"""Training a ConvLSTM on gridded data into a run directory.

read + validate (grid.py) -> split by time: the last `horizon` frames are held out for early
stopping -> scale per channel on the training frames -> frames on the device as one tensor
(frames, channels, H, W) -> windows are start indices (lookback input frames, horizon target
frames), a batch one index gather -> epochs -> run dir: model.pt (best), last.pt (resume),
config.yaml, history.csv, metrics.json, under the run directory's lock and marker (rundir.py).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__, rundir
from ..checkpoint import BEST, LAST, atomic_write_text, load_checkpoint, save_checkpoint
from ..config import RESUMABLE_KEYS, Config
from ..device import describe, resolve_device, seed_everything
from ..errors import LstmcastError
from ..events import LOSS_EVERY, Callback, EpochEnd, Step, TrainResult, TrainStart
from ..fitstate import Fit, make_optimizer
from ..members import write_history
from ..model import count_parameters
from ..run import config_from_saved
from ..windows import available_memory
from .convlstm import ConvLSTMForecaster
from .grid import GridSet, read_grid

GRID_LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}
GRID_SCALINGS = ("standard", "none")
# Keys of series runs that a gridded run does not use: set to anything but the default, an error
# (a key that silently does nothing would mislead). model.hidden_size and data.calendar are
# simply not read (conv_channels is the width; calendar features are not used).
_NOT_FOR_GRIDS = ("data.id_col", "data.past_covariates", "data.future_covariates", "model.window_norm",
                  "model.cell", "model.bidirectional", "model.attention", "model.linear_skip", "model.quantiles",
                  "model.conformal", "model.classical",
                  "model.series_embedding", "train.ensemble", "train.ensemble_lookbacks",
                  "train.members", "train.refit_epochs", "train.max_windows_per_series", "train.windows_per_epoch",
                  "train.schedule", "train.select", "train.time_budget", "train.buffer")


def check_grid_config(config: Config) -> None:
    """Refuse, in one line each, the keys a gridded run cannot honour."""
    ours, defaults = config.flat(), Config().flat()
    for key in _NOT_FOR_GRIDS:
        if ours[key] != defaults[key]:
            raise LstmcastError(f"config key '{key}' does not apply to gridded runs (data.grid is set); "
                                f"leave it at its default ({defaults[key]!r}), see docs/gridded.md")
    if config.train.loss not in GRID_LOSSES:
        raise LstmcastError(f"config key 'train.loss' is {config.train.loss!r}; gridded runs train with "
                            f"{' | '.join(GRID_LOSSES)}")
    if config.data.scaling not in GRID_SCALINGS:
        raise LstmcastError(f"config key 'data.scaling' is {config.data.scaling!r}; gridded runs scale each "
                            f"channel with {' | '.join(GRID_SCALINGS)}")
    if config.train.precision not in ("auto", "fp32"):
        raise LstmcastError(f"config key 'train.precision' is {config.train.precision!r}; gridded runs "
                            f"compute in fp32: auto | fp32")



def grid_fingerprint(grid: GridSet) -> str:
    digest = hashlib.sha256()
    digest.update(f"{grid.freq}|{grid.times[0].isoformat()}|{grid.values.shape}".encode())
    digest.update("|".join(",".join(c) for c in grid.coords).encode())
    digest.update(np.ascontiguousarray(grid.values).tobytes())
    return digest.hexdigest()


def read_for_config(data_path: Path, config: Config) -> GridSet:
    d = config.data
    return read_grid(data_path, list(d.grid), time_col=d.time_col, target=d.target, fill=d.fill,
                     freq=d.freq, dayfirst=d.dayfirst)


def resolved(config: Config, grid: GridSet) -> Config:
    """The config with what was detected written out (columns, lookback, frequency, day order)."""
    cols = grid.columns
    data = dataclasses.replace(config.data, time_col=cols.time_col, target=list(cols.targets),
                               lookback=config.data.resolved_lookback, freq=grid.freq,
                               dayfirst=config.data.dayfirst if grid.dayfirst is None else grid.dayfirst)
    return dataclasses.replace(config, data=data)


def check_frames(grid: GridSet, config: Config, path: Path) -> None:
    lookback, horizon = config.data.resolved_lookback, config.data.horizon
    need = lookback + 2 * horizon
    if len(grid.times) < need:
        raise LstmcastError(f"{path}: {len(grid.times)} frames (timestamps); a gridded run needs at least "
                            f"lookback + 2 x horizon = {need} (lookback {lookback}, horizon {horizon}: one "
                            f"training window and the held-out horizon); lower --horizon / --lookback or give "
                            f"more frames")


def check_memory(grid: GridSet, config: Config) -> None:
    """Refuse, before allocating, a batch whose saved activations would not fit in memory: each
    ConvLSTM step keeps about a dozen tensors of (hidden, H, W) per layer for the backward pass."""
    available = available_memory()
    if available is None:
        return
    height, width = grid.shape
    steps = config.data.resolved_lookback + config.data.horizon
    per_window = steps * 2 * config.model.layers * 12 * config.model.conv_channels * height * width * 4
    need = config.train.batch_size * per_window + grid.values.size * 4
    if need > available:
        fits = max(1, int(available // per_window) // 2)
        raise LstmcastError(f"a batch of {config.train.batch_size} windows of {steps} frames of {height}x{width} "
                            f"needs ~{need / 1024 ** 3:.3g} GiB for training, more than this machine's "
                            f"{available / 1024 ** 3:.3g} GiB available; lower train.batch_size (e.g. {fits}) "
                            f"or model.conv_channels")


def scaler_of(config: Config, grid: GridSet, n_train: int) -> dict:
    """Per channel (loc, scale) from the training frames; scale 1 where a channel is constant."""
    channels = grid.values.shape[1]
    if config.data.scaling == "none":
        return {"method": "none", "loc": [0.0] * channels, "scale": [1.0] * channels}
    part = grid.values[:n_train]
    loc = part.mean(axis=(0, 2, 3))
    scale = part.std(axis=(0, 2, 3))
    scale = np.where(scale > 0, scale, 1.0)
    return {"method": "standard", "loc": [float(v) for v in loc], "scale": [float(v) for v in scale]}


def scaled_frames(values: np.ndarray, scaler: dict, device: torch.device) -> torch.Tensor:
    """(frames, channels, H, W) float32 on the device, in scaled units."""
    loc = np.asarray(scaler["loc"])[None, :, None, None]
    scale = np.asarray(scaler["scale"])[None, :, None, None]
    return torch.as_tensor((values - loc) / scale, dtype=torch.float32, device=device)


def unscaled(values: np.ndarray, scaler: dict) -> np.ndarray:
    """(..., channels, H, W) back in the data's units."""
    loc = np.asarray(scaler["loc"])[:, None, None]
    scale = np.asarray(scaler["scale"])[:, None, None]
    return values * scale + loc


def build_model(config: Config, channels: int, height: int, width: int) -> ConvLSTMForecaster:
    m = config.model
    return ConvLSTMForecaster(channels, m.conv_channels, m.layers, m.conv_kernel, height, width,
                              config.data.horizon, m.dropout)


def windows_of(frames: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """(batch, length, channels, H, W): the frames from each start; one index gather."""
    index = starts[:, None] + torch.arange(length, device=frames.device)
    return frames[index]


@dataclasses.dataclass
class _Split:
    train_starts: torch.Tensor   # windows whose targets end before the held-out frames
    val_starts: torch.Tensor     # windows whose targets reach into the last `horizon` frames
    n_train: int                 # frames the model trains on (the first n_train)


def split(n_frames: int, lookback: int, horizon: int, device: torch.device) -> _Split:
    n_train = n_frames - horizon
    last_train = n_train - lookback - horizon          # last start whose targets end by n_train
    train = torch.arange(last_train + 1, device=device)
    val = torch.arange(last_train + 1, n_frames - lookback - horizon + 1, device=device)
    return _Split(train, val, n_train)


def evaluate_loss(model, frames: torch.Tensor, starts: torch.Tensor, lookback: int, horizon: int,
                  loss_fn, batch_size: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for k in range(0, len(starts), batch_size):
            window = windows_of(frames, starts[k:k + batch_size], lookback + horizon)
            pred = model(window[:, :lookback])
            total += float(loss_fn(pred, window[:, lookback:], reduction="sum")) / pred[0].numel()
    return total / len(starts)


def train_grid(data_path: str | Path, out_dir: str | Path, config: Config | None = None, *,
               resume: bool = False, overwrite: bool = False, on_event: Callback | None = None) -> TrainResult:
    """Train a ConvLSTM on the gridded CSV at `data_path` into the run directory `out_dir`; the
    same lock, marker, --resume and --overwrite rules as a series run (rundir.py)."""
    return rundir.locked(data_path, out_dir, config, resume, overwrite, on_event, _train_locked)


def _train_locked(data_path: Path, out: Path, config: Config, resume: bool, overwrite: bool,
                  on_event: Callback | None) -> TrainResult:
    check_grid_config(config)
    grid = read_for_config(data_path, config)
    config = resolved(config, grid)
    check_frames(grid, config, data_path)
    check_memory(grid, config)
    device = resolve_device(config.train.device)
    work = rundir.prepare(out, resume, overwrite)
    fingerprint = grid_fingerprint(grid)
    state = _check_resume(out, config, fingerprint, data_path) if resume else None
    fresh = rundir.create(work)
    try:
        result = _train_in(work, grid, config, device, fingerprint, state, on_event or (lambda event: None),
                           on_event is not None)
    except LstmcastError:
        if work != out or (fresh and not resume):
            shutil.rmtree(work, ignore_errors=True)
        raise
    except BaseException:
        if work != out:
            shutil.rmtree(work, ignore_errors=True)
        raise
    rundir.finish(work, out)
    result.run_dir = out
    return result


def _check_resume(out: Path, config: Config, fingerprint: str, data_path: Path) -> dict:
    state = load_checkpoint(out / LAST, require=("config", "grid", "model", "optimizer", "epoch"))
    saved = config_from_saved(state["config"])
    ours, theirs = config.flat(), saved.flat()
    changed = next((k for k in ours if k not in RESUMABLE_KEYS and ours[k] != theirs[k]), None)
    if changed is not None:
        raise LstmcastError(f"--resume: {changed} is {ours[changed]!r} but the run was started with "
                            f"{theirs[changed]!r}; only {', '.join(sorted(RESUMABLE_KEYS))} may change")
    if state.get("data_fingerprint") != fingerprint:
        raise LstmcastError(f"--resume: {data_path} is not the data this run was started on; resume with the "
                            f"same file, or start a new run (--overwrite)")
    return state


def _train_in(work: Path, grid: GridSet, config: Config, device: torch.device, fingerprint: str,
              state: dict | None, emit: Callback, listening: bool) -> TrainResult:
    tc = config.train
    lookback, horizon = config.data.resolved_lookback, config.data.horizon
    parts = split(len(grid.times), lookback, horizon, device)
    scaler = scaler_of(config, grid, parts.n_train)
    frames = scaled_frames(grid.values, scaler, device)
    height, width = grid.shape
    channels = grid.values.shape[1]
    loss_fn = GRID_LOSSES[tc.loss]
    seed_everything(tc.seed)
    model = build_model(config, channels, height, width).to(device)
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=tc.lr_factor, patience=tc.lr_patience)
    fit = Fit(model, optimizer, scheduler, torch.Generator().manual_seed(tc.seed), copy.deepcopy(model.state_dict()))
    history: list[dict] = []
    if state is not None:
        fit.restore(state)
        history = [dict(row) for row in state["history"]]
    meta = {"config": config.to_dict(), "grid": {
        "columns": grid.columns.to_dict(), "coords": grid.coords, "freq": grid.freq, "shape": [height, width],
        "channels": channels, "last_timestamp": grid.times[-1].isoformat(),
        "train_end": grid.times[parts.n_train - 1].isoformat(), "stopping_end": grid.times[-1].isoformat()},
        "scaler": scaler, "versions": {"lstmcast": __version__, "torch": str(torch.__version__)},
        "data_fingerprint": fingerprint}
    atomic_write_text(work / "config.yaml", config.to_yaml())
    n_windows = len(parts.train_starts)
    steps = math.ceil(n_windows / tc.batch_size)
    emit(TrainStart(1, 1, describe(device), "fp32", grid.n_cells, n_windows, count_parameters(model), tc.epochs,
                    steps, fit.epoch + 1, f"ConvLSTM on a {height}x{width} grid, each cell a series"))
    while fit.epoch < tc.epochs and fit.bad_epochs < tc.patience:
        fit.epoch += 1
        started = time.perf_counter()
        train_loss = _epoch(fit, frames, parts.train_starts, lookback, horizon, loss_fn, tc,
                            emit if listening else None)
        val_loss = evaluate_loss(model, frames, parts.val_starts, lookback, horizon, loss_fn, tc.batch_size)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise LstmcastError(f"training diverged at epoch {fit.epoch} (train loss {train_loss}, validation "
                                f"loss {val_loss}); lower train.lr (now {tc.lr:g})")
        trained_lr = optimizer.param_groups[0]["lr"]
        scheduler.step(val_loss)
        improved = fit.record(val_loss, fit.epoch, trained_lr)
        if improved:
            save_checkpoint({**meta, "models": [fit.best_weights]}, work / BEST)
        seconds, lr = time.perf_counter() - started, optimizer.param_groups[0]["lr"]
        history.append({"member": 1, "epoch": fit.epoch, "train_loss": train_loss, "val_loss": val_loss,
                        "lr": lr, "seconds": round(seconds, 4)})
        write_history(work / "history.csv", history)
        save_checkpoint({**meta, **fit.resumable(), "history": history}, work / LAST)
        emit(EpochEnd(1, 1, fit.epoch, tc.epochs, train_loss, val_loss, lr, seconds, improved))
    model.load_state_dict(fit.best_weights)
    metrics = _validation_metrics(model, frames, grid, parts, scaler, lookback, horizon, tc.batch_size)
    metrics.update({"horizon": horizon, "grid": [height, width], "channels": channels,
                    "validation_windows": f"{len(parts.val_starts)} windows whose targets reach into the last "
                                          f"{horizon} frames (early stopping: in-sample)",
                    "members": 1, "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val,
                    "epochs_run": fit.epoch, "stopped_early": fit.bad_epochs >= tc.patience,
                    "device": describe(device), "parameters": count_parameters(model)})
    atomic_write_text(work / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return TrainResult(work, fit.best_epoch, fit.best_val, fit.epoch, metrics["stopped_early"], metrics)


def _epoch(fit: Fit, frames: torch.Tensor, starts: torch.Tensor, lookback: int, horizon: int, loss_fn,
           tc, emit: Callback | None) -> float:
    model, optimizer = fit.model, fit.optimizer
    model.train()
    order = starts[torch.randperm(len(starts), generator=fit.generator).to(starts.device)]
    steps = math.ceil(len(order) / tc.batch_size)
    total = 0.0
    for step in range(1, steps + 1):
        batch = order[(step - 1) * tc.batch_size: step * tc.batch_size]
        window = windows_of(frames, batch, lookback + horizon)
        loss = loss_fn(model(window[:, :lookback]), window[:, lookback:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
        optimizer.step()
        total += float(loss.detach()) * len(batch)
        if emit is not None:
            report = step % LOSS_EVERY == 0 or step == steps
            emit(Step(1, fit.epoch, step, steps, total / min(step * tc.batch_size, len(order)) if report else None))
    return total / len(order)


def _validation_metrics(model, frames: torch.Tensor, grid: GridSet, parts: _Split, scaler: dict,
                        lookback: int, horizon: int, batch_size: int) -> dict:
    """MAE / RMSE in the data's units on the early-stopping windows: the model and persistence."""
    model.eval()
    preds = []
    with torch.no_grad():
        for k in range(0, len(parts.val_starts), batch_size):
            window = windows_of(frames, parts.val_starts[k:k + batch_size], lookback)
            preds.append(model(window).cpu().double().numpy())
    starts = parts.val_starts.cpu().numpy()
    index = starts[:, None] + lookback + np.arange(horizon)
    actual = grid.values[index]
    last = grid.values[starts + lookback - 1][:, None]
    forecast = unscaled(np.concatenate(preds), scaler)
    return {"validation": {"model": error_metrics(actual, forecast),
                           "persistence": error_metrics(actual, np.broadcast_to(last, actual.shape))}}


def error_metrics(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    """MAE and RMSE over every frame, channel and cell."""
    error = forecast - actual
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2)))}
