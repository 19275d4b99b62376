"""Predict and evaluate with a gridded (ConvLSTM) run.

predict: run dir -> model, config, scaler, grid; CSV -> the same read + validate on the trained
grid and frequency -> the last `lookback` frames -> scale -> model -> unscale -> the next
`horizon` frames, one row per (timestamp, grid cell), in the input's columns.
evaluate: the last `horizon` frames held out (or several windows), scored with MAE / RMSE for the
model, persistence (the last frame) and per-cell seasonal naive (each cell's value one season
earlier), with the points the run trained or early-stopped on counted as in-sample.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..checkpoint import BEST, atomic_write_text, load_checkpoint
from ..config import Config
from ..device import resolve_device
from ..errors import LstmcastError
from ..outputs import need_pyarrow, write_table
from ..run import config_from_saved
from ..rundir import check_output
from ..timegrid import season_length
from .fit import build_model, error_metrics, scaled_frames, unscaled
from .grid import GridColumns, GridSet, read_grid


@dataclass
class GridRun:
    path: Path
    model: torch.nn.Module
    config: Config
    columns: GridColumns
    meta: dict          # the checkpoint's "grid": coords, freq, shape, train_end, stopping_end
    scaler: dict
    device: torch.device

    @property
    def horizon(self) -> int:
        return self.config.data.horizon

    @property
    def lookback(self) -> int:
        return self.config.data.resolved_lookback


def load_grid_run(run_dir: str | Path, device: str = "cpu") -> GridRun:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LstmcastError(f"{run_dir}: run directory not found; pass the --out of 'lstmcast train'")
    path = run_dir / BEST
    payload = load_checkpoint(path, require=("config", "grid", "models", "scaler"))
    target = resolve_device(device)
    try:
        config = config_from_saved(payload["config"])
        grid = payload["grid"]
        height, width = grid["shape"]
        model = build_model(config, int(grid["channels"]), int(height), int(width))
        model.load_state_dict(payload["models"][0])
        columns = GridColumns.from_dict(grid["columns"])
    except LstmcastError as exc:
        raise LstmcastError(f"{path}: {exc}; retrain the run") from None
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else type(exc).__name__
        raise LstmcastError(f"{path}: not a complete gridded run ({what}); retrain the run") from None
    return GridRun(run_dir, model.to(target).eval(), config, columns, grid, payload["scaler"], target)


def read_for_grid_run(run: GridRun, data_path: str | Path) -> GridSet:
    """The CSV read with the run's columns, fill policy, frequency and grid."""
    d = run.config.data
    return read_grid(data_path, list(run.columns.grid_cols), time_col=run.columns.time_col,
                     target=list(run.columns.targets), fill=d.fill, dayfirst=d.dayfirst,
                     trained={"freq": run.meta["freq"], "coords": run.meta["coords"]})


def check_history(run: GridRun, grid: GridSet, path, frames: int, what: str) -> None:
    if frames < run.lookback:
        need = run.lookback + len(grid.times) - frames
        raise LstmcastError(f"{path}: {frames} frames (timestamps) {what}; the run reads the last "
                            f"{run.lookback} (data.lookback), so give at least {need}")


def forecast_frames(run: GridRun, grid: GridSet, origins: list[int], horizon: int) -> np.ndarray:
    """(len(origins), horizon, channels, H, W) in the data's units, each forecast from the
    `lookback` frames before its origin (a frame index), in one batched pass."""
    frames = scaled_frames(grid.values, run.scaler, run.device)
    index = torch.as_tensor(np.asarray(origins)[:, None] - run.lookback + np.arange(run.lookback),
                            device=run.device)
    with torch.no_grad():
        out = run.model(frames[index], horizon)
    return unscaled(out.cpu().double().numpy(), run.scaler)


def long_frame(run: GridRun, grid: GridSet, times: pd.DatetimeIndex, values: np.ndarray) -> pd.DataFrame:
    """(steps, channels, H, W) -> one row per (timestamp, cell) in the input's columns: time,
    grid coordinates as written, values; cells in row-major order within each timestamp."""
    steps, channels, height, width = values.shape
    cells = height * width
    columns = {run.columns.time_col: np.repeat(times, cells)}
    coords = grid.coords
    if len(coords) == 1:
        columns[run.columns.grid_cols[0]] = np.tile(np.array(coords[0], dtype=object), steps)
    else:
        columns[run.columns.grid_cols[0]] = np.tile(np.repeat(np.array(coords[0], dtype=object), width), steps)
        columns[run.columns.grid_cols[1]] = np.tile(np.array(coords[1], dtype=object), steps * height)
    for c, name in enumerate(run.columns.targets):
        columns[name] = values[:, c].reshape(-1)
    frame = pd.DataFrame(columns)
    frame.attrs["grid"] = {"shape": [height, width], "frames": steps}
    return frame


def predict_grid(data_path: str | Path, run_dir: str | Path, out_path: str | Path | None = None, *,
                 horizon: int | None = None, device: str = "cpu", future: str | Path | None = None) -> pd.DataFrame:
    """The next `horizon` frames after the last timestamp of `data_path`, in its long format."""
    if future is not None:
        raise LstmcastError("--future: gridded runs have no future covariates; drop --future")
    if out_path is not None:
        check_output(out_path, [data_path], run_dir)
        need_pyarrow(out_path)
    run = load_grid_run(run_dir, device)
    steps = run.horizon if horizon is None else horizon
    if not 1 <= steps <= run.horizon:
        raise LstmcastError(f"--horizon {steps}: must be between 1 and the trained horizon {run.horizon}")
    grid = read_for_grid_run(run, data_path)
    check_history(run, grid, data_path, len(grid.times), "in the file")
    values = forecast_frames(run, grid, [len(grid.times)], steps)[0]
    frame = long_frame(run, grid, grid.future_times(steps), values)
    if out_path is not None:
        write_table(out_path, frame)
    return frame


def seasonal_frames(values: np.ndarray, origin: int, horizon: int, season: int) -> np.ndarray:
    """(horizon, channels, H, W): each cell's value one season before each target frame (the last
    full season repeated); persistence when there is less than a season of history."""
    if season <= 1 or origin < season:
        return np.repeat(values[origin - 1][None], horizon, axis=0)
    return values[origin - season + np.arange(horizon) % season]


def evaluate_grid(data_path: str | Path, run_dir: str | Path, out_path: str | Path | None = None, *,
                  device: str = "cpu", season: int | None = None, windows: int = 1,
                  step: int | None = None) -> dict:
    """Scores of the model, persistence and per-cell seasonal naive on the last `horizon` frames
    (windows > 1: that many origins, `step` frames apart, the last one as with windows=1)."""
    if season is not None and season < 1:
        raise LstmcastError(f"--season-length {season}: must be 1 or more (1 = no seasonality)")
    if windows < 1 or (step is not None and step < 1):
        raise LstmcastError("--windows and --step must be 1 or more")
    if out_path is not None:
        check_output(out_path, [data_path], run_dir)
        need_pyarrow(out_path)
    run = load_grid_run(run_dir, device)
    grid = read_for_grid_run(run, data_path)
    horizon = run.horizon
    step = horizon if step is None else step
    n = len(grid.times)
    origins = [n - horizon - back for back in range((windows - 1) * step, -1, -step)]
    check_history(run, grid, data_path, origins[0], f"before the first scored window ({windows} window(s) of "
                                                    f"{horizon}, {step} apart, held out)")
    season = season or season_length(grid.freq)
    forecasts = forecast_frames(run, grid, origins, horizon)
    actual = np.stack([grid.values[o:o + horizon] for o in origins])
    persistence = np.stack([np.repeat(grid.values[o - 1][None], horizon, axis=0) for o in origins])
    seasonal = np.stack([seasonal_frames(grid.values, o, horizon, season) for o in origins])

    def scores(rows) -> dict:
        return {"model": error_metrics(actual[rows], forecasts[rows]),
                "persistence": error_metrics(actual[rows], persistence[rows]),
                "seasonal_naive": error_metrics(actual[rows], seasonal[rows])}

    seen = _in_sample(run, grid, origins, horizon)
    per_window = [{"window": k + 1, "steps_before_end": n - horizon - o, "metrics": scores([k]),
                   "in_sample": seen[k]} for k, o in enumerate(origins)]
    total = {key: sum(w[key] for w in seen) for key in seen[0]}
    height, width = grid.shape
    report = {"data": str(data_path), "run": str(run_dir), "grid": {"shape": [height, width],
              "cells": grid.n_cells, "channels": len(run.columns.targets)},
              "horizon": horizon, "season_length": season, "n_series": grid.n_cells,
              "metrics": scores(slice(None)), "windows": windows, "step": step, "per_window": per_window,
              "in_sample": total}
    if out_path is not None:
        atomic_write_text(out_path, json.dumps(report, indent=2) + "\n")
    return report


def _in_sample(run: GridRun, grid: GridSet, origins: list[int], horizon: int) -> list[dict]:
    """Per window, the scored points (frames x cells x channels) the run trained on or chose its
    best epoch on (by timestamp: the run's last training frame and last early-stopping frame)."""
    train_end = pd.Timestamp(run.meta["train_end"])
    stopping_end = pd.Timestamp(run.meta["stopping_end"])
    per_frame = grid.n_cells * len(run.columns.targets)
    out = []
    for origin in origins:
        times = grid.times[origin:origin + horizon]
        trained = int((times <= train_end).sum())
        stopping = int(((times > train_end) & (times <= stopping_end)).sum())
        out.append({"points": (trained + stopping) * per_frame, "of": horizon * per_frame,
                    "trained": trained * per_frame, "early_stopping": stopping * per_frame, "calibration": 0})
    return out
