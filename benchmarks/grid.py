"""Gridded forecasting: ConvLSTM vs persistence and a per-cell LSTM, on data of known physics.

The data: a tracer on a periodic SIZE x SIZE grid, carried by a steady wind field (semi-Lagrangian
advection, bilinear interpolation; the wind varies across the grid, about 1 cell per step),
diffused (explicit 5-point Laplacian) and slowly decaying, with Gaussian blobs released at random
places and times. What arrives at a cell comes from its upwind neighbours, so a model must read
the neighbourhood: persistence (the last frame) cannot move anything, and a per-cell LSTM (one
shared nn.LSTM reading each cell's own history, of about the ConvLSTM's parameter count) sees a
blob only once it has arrived.

The ConvLSTM is trained through lstmcast's own train path (a CSV in the long format, data.grid)
on the frames before the test part, and scored with lstmcast's evaluate on `--windows` origins
`horizon` frames apart, all after the training file ends (in-sample 0). The per-cell LSTM is
trained here on the same frames and windows for the same number of epochs, and scored on the
same origins. Speed: forecast frames per second (batched, no gradient) and training windows per
second, on the CPU (and CUDA when there is one). The last line is JSON.

    python benchmarks/grid.py                  # the figures in docs/gridded.md
    python benchmarks/grid.py --frames 160 --size 16 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lstmcast.config import load_config  # noqa: E402
from lstmcast.evaluate import evaluate  # noqa: E402
from lstmcast.model import count_parameters  # noqa: E402
from lstmcast.spatial.fit import error_metrics  # noqa: E402
from lstmcast.spatial.forecast import forecast_frames, load_grid_run, read_for_grid_run  # noqa: E402
from lstmcast.train import train  # noqa: E402


def advect_diffuse(frames: int, size: int, seed: int, kappa: float = 0.08, decay: float = 0.985,
                   blob_rate: float = 0.35) -> np.ndarray:
    """(frames, size, size) tracer concentrations; the physics in the module docstring."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    u = 0.9 + 0.35 * np.sin(2 * np.pi * y / size)       # eastward, cells per step
    v = 0.45 * np.cos(2 * np.pi * x / size)             # southward
    src_x, src_y = x - u, y - v                          # where each cell's air was one step ago
    x0, y0 = np.floor(src_x).astype(int), np.floor(src_y).astype(int)
    wx, wy = src_x - x0, src_y - y0
    q = np.zeros((size, size))
    out = np.empty((frames, size, size))
    for t in range(frames + 50):                         # 50 steps of spin-up
        q = ((1 - wy) * ((1 - wx) * q[y0 % size, x0 % size] + wx * q[y0 % size, (x0 + 1) % size])
             + wy * ((1 - wx) * q[(y0 + 1) % size, x0 % size] + wx * q[(y0 + 1) % size, (x0 + 1) % size]))
        lap = np.roll(q, 1, 0) + np.roll(q, -1, 0) + np.roll(q, 1, 1) + np.roll(q, -1, 1) - 4 * q
        q = decay * (q + kappa * lap)
        for _ in range(rng.poisson(blob_rate)):
            cy, cx = rng.uniform(0, size, 2)
            sigma, amplitude = rng.uniform(1.2, 2.5), rng.uniform(0.5, 1.5)
            dy = (y - cy + size / 2) % size - size / 2
            dx = (x - cx + size / 2) % size - size / 2
            q = q + amplitude * np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))
        if t >= 50:
            out[t - 50] = q
    return out


def long_csv(values: np.ndarray, path: Path) -> None:
    frames, size, _ = values.shape
    times = pd.date_range("2024-01-01", periods=frames, freq="h")
    pd.DataFrame({"ds": np.repeat(times.strftime("%Y-%m-%d %H:%M"), size * size),
                  "lat": np.tile(np.repeat(np.arange(size), size), frames),
                  "lon": np.tile(np.arange(size), frames * size),
                  "y": values.reshape(-1).round(6)}).to_csv(path, index=False)


class CellLSTM(nn.Module):
    """One nn.LSTM shared by every cell, reading that cell's own lookback; a linear head gives its
    horizon values, as a change from its last value (like the ConvLSTM's head)."""

    def __init__(self, hidden: int, layers: int, horizon: int):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # (n, lookback) -> (n, horizon)
        states, _ = self.lstm(x[..., None])
        return x[:, -1:] + self.head(states[:, -1])


def fit_cell_lstm(values: np.ndarray, n_train: int, lookback: int, horizon: int, hidden: int, epochs: int,
                  batch: int, seed: int, device: torch.device, cell_samples: int) -> tuple[CellLSTM, float, float]:
    """Train on the same windows as the ConvLSTM (every cell of every window a sample), scaled the
    same way; the last `horizon` frames of the training part choose the best epoch."""
    torch.manual_seed(seed)
    loc, scale = values[:n_train - horizon].mean(), values[:n_train - horizon].std()
    cells = torch.as_tensor((values[:n_train] - loc) / scale, dtype=torch.float32).flatten(1).T.to(device)
    model = CellLSTM(hidden, 2, horizon).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    width = lookback + horizon
    train_starts = torch.arange(n_train - horizon - width + 1)
    val_starts = torch.arange(n_train - horizon - width + 1, n_train - width + 1)
    n_cells = cells.shape[0]
    best, best_state, seconds, windows = math.inf, None, 0.0, 0
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        started = time.perf_counter()
        # Per window, `cell_samples` of its cells (all of them where there are fewer): the cells share
        # one model, so a sample of them per window and epoch teaches it as much, in less time.
        take = min(cell_samples, n_cells)
        picked = torch.argsort(torch.rand(len(train_starts), n_cells, generator=generator), dim=1)[:, :take]
        samples = torch.stack([picked.reshape(-1), train_starts.repeat_interleave(take)], dim=1)
        samples = samples[torch.randperm(len(samples), generator=generator)]
        for k in range(0, len(samples), batch):
            cell, start = samples[k:k + batch].to(device).unbind(1)
            window = cells[cell[:, None], start[:, None] + torch.arange(width, device=device)]
            loss = nn.functional.mse_loss(model(window[:, :lookback]), window[:, lookback:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        seconds += time.perf_counter() - started
        windows += len(train_starts)
        model.eval()
        with torch.no_grad():
            idx = val_starts[:, None] + torch.arange(width)
            window = cells[:, idx.to(device)]                      # (cells, windows, width)
            flat = window.reshape(-1, width)
            val = float(nn.functional.mse_loss(model(flat[:, :lookback]), flat[:, lookback:]))
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.scaling = (float(loc), float(scale))
    return model, windows / seconds, best


def cell_forecasts(model: CellLSTM, values: np.ndarray, origins: list[int], lookback: int,
                   device: torch.device) -> tuple[np.ndarray, float]:
    """(origins, horizon, size, size) and forecast frames per second."""
    loc, scale = model.scaling
    frames, size, _ = values.shape
    history = np.stack([values[o - lookback:o] for o in origins])               # (n, lookback, s, s)
    x = torch.as_tensor((history - loc) / scale, dtype=torch.float32).permute(0, 2, 3, 1).reshape(-1, lookback)
    started = time.perf_counter()
    with torch.no_grad():
        out = model(x.to(device)).cpu()
    rate = len(origins) * out.shape[1] / (time.perf_counter() - started)
    out = out.reshape(len(origins), size, size, -1).permute(0, 3, 1, 2).double().numpy()
    return out * scale + loc, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--test-windows", type=int, default=10)
    parser.add_argument("--lookback", type=int, default=6)
    parser.add_argument("--horizon", type=int, default=6)
    parser.add_argument("--channels", type=int, default=8, help="model.conv_channels")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cell-hidden", type=int, default=96, help="per-cell LSTM width (2 layers)")
    parser.add_argument("--cell-samples", type=int, default=256,
                        help="cells per training window and epoch of the per-cell LSTM")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a shared machine: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="all", choices=("all", "cpu", "cuda"),
                        help="all: the CPU, and CUDA when there is one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lookback, horizon = args.lookback, args.horizon
    values = advect_diffuse(args.frames, args.size, args.seed)
    n_train = args.frames - args.test_windows * horizon
    origins = [n_train + k * horizon for k in range(args.test_windows)]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if args.device != "all":
        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit("grid.py: --device cuda: CUDA is not available")
        devices = [torch.device(args.device)]
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s); {args.size}x{args.size} grid, "
          f"{args.frames} frames, training on the first {n_train}, scoring {args.test_windows} windows of "
          f"{horizon} after them; lookback {lookback}", file=sys.stderr)
    report = {"size": args.size, "frames": args.frames, "lookback": lookback, "horizon": horizon,
              "threads": args.threads, "test_windows": args.test_windows, "epochs": args.epochs, "devices": {}}
    with tempfile.TemporaryDirectory() as tmp:
        full, cut = Path(tmp) / "grid.csv", Path(tmp) / "grid-train.csv"
        long_csv(values, full)
        long_csv(values[:n_train], cut)
        for device in devices:
            sets = {"data.grid": ["lat", "lon"], "data.horizon": horizon, "data.lookback": lookback,
                    "data.freq": "h", "model.conv_channels": args.channels, "model.layers": args.layers,
                    "model.dropout": 0.0, "train.epochs": args.epochs, "train.patience": args.epochs,
                    "train.batch_size": 16, "train.lr": 3e-3, "train.seed": args.seed, "train.device": device.type}
            run_dir = Path(tmp) / f"run-{device.type}"
            started = time.perf_counter()
            result = train(cut, run_dir, load_config(overrides=sets))
            train_seconds = time.perf_counter() - started
            epochs = result.epochs_run
            conv_train_rate = epochs * (n_train - horizon - lookback - horizon + 1) / train_seconds
            scores = evaluate(full, run_dir, windows=args.test_windows, step=horizon, device=device.type)
            assert scores["in_sample"]["points"] == 0, scores["in_sample"]
            run = load_grid_run(run_dir, device.type)
            grid = read_for_grid_run(run, full)
            forecast_frames(run, grid, origins[:1], horizon)                    # warm-up
            started = time.perf_counter()
            forecast_frames(run, grid, origins, horizon)
            if device.type == "cuda":
                torch.cuda.synchronize()
            conv_rate = len(origins) * horizon / (time.perf_counter() - started)

            cell, cell_train_rate, _ = fit_cell_lstm(values, n_train, lookback, horizon, args.cell_hidden,
                                                     args.epochs, 1024, args.seed, device, args.cell_samples)
            cell_out, cell_rate = cell_forecasts(cell, values, origins, lookback, device)
            actual = np.stack([values[o:o + horizon] for o in origins])
            metrics = {"convlstm": scores["metrics"]["model"], "persistence": scores["metrics"]["persistence"],
                       "seasonal_naive": scores["metrics"]["seasonal_naive"],
                       "cell_lstm": error_metrics(actual, cell_out)}
            entry = {"metrics": metrics,
                     "parameters": {"convlstm": count_parameters(run.model), "cell_lstm": count_parameters(cell)},
                     "forecast_frames_per_s": {"convlstm": conv_rate, "cell_lstm": cell_rate},
                     "train_windows_per_s": {"convlstm": conv_train_rate, "cell_lstm": cell_train_rate},
                     "convlstm_epochs": epochs, "convlstm_best_epoch": result.best_epoch,
                     "convlstm_train_seconds": train_seconds}
            report["devices"][device.type] = entry
            print(f"\n{device.type}: MAE / RMSE on {args.test_windows} x {horizon} held-out frames", file=sys.stderr)
            for name, m in metrics.items():
                params = entry["parameters"].get(name)
                size = f"  ({params} parameters)" if params else ""
                print(f"  {name:15s} {m['mae']:.4f} / {m['rmse']:.4f}{size}", file=sys.stderr)
            for name in ("convlstm", "cell_lstm"):
                print(f"  {name}: forecast {entry['forecast_frames_per_s'][name]:.1f} frames/s, training "
                      f"{entry['train_windows_per_s'][name]:.1f} windows/s", file=sys.stderr)
            conv, base = metrics["convlstm"]["mae"], min(metrics["persistence"]["mae"], metrics["cell_lstm"]["mae"])
            entry["convlstm_mae_over_best_other"] = conv / base   # < 0.9: the clear margin the design asks for
            print(f"  ConvLSTM MAE / best other: {conv / base:.3f}", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
