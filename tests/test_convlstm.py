"""ConvLSTM for gridded series (lstmcast/spatial/): the cell against Shi et al.'s equations written
out step by step in float64 (values and gradients), parameter counts, the gridded CSV's
validation (one line, exit 2) and train -> predict -> evaluate (and --resume) through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import error_line, run_cli

from lstmcast.model import count_parameters
from lstmcast.spatial.convlstm import ConvLSTMCell, ConvLSTMForecaster, cell_parameters, forecaster_parameters
from lstmcast.spatial.grid import read_grid

# A tiny model: enough to run every path, not to forecast well.
TINY_GRID = ["--set", "model.conv_channels=3", "--set", "model.layers=1", "--set", "train.batch_size=16",
             "--set", "train.epochs=2", "--horizon", "3", "--lookback", "4"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# --- the cell, from its equations -------------------------------------------------------------


def _conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """W * X written out: x (batch, in, H, W), w (out, in, k, k), zero padding k // 2, stride 1:
    out[b, o, y, x] = sum_{i, dy, dx} w[o, i, dy, dx] * x_padded[b, i, y + dy, x + dx]."""
    k = w.shape[-1]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    height, width = x.shape[2:]
    out = np.zeros((x.shape[0], w.shape[0], height, width))
    for dy in range(k):
        for dx in range(k):
            patch = padded[:, :, dy:dy + height, dx:dx + width]          # (batch, in, H, W)
            out += np.einsum("bihw,oi->bohw", patch, w[:, :, dy, dx])
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _reference_step(p: dict, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shi et al. (2015), equations (3), one line each."""
    b = {g: p[f"b_{g}"][None, :, None, None] for g in "ifco"}
    i = _sigmoid(_conv(x, p["W_xi"]) + _conv(h, p["W_hi"]) + p["W_ci"] * c + b["i"])
    f = _sigmoid(_conv(x, p["W_xf"]) + _conv(h, p["W_hf"]) + p["W_cf"] * c + b["f"])
    c_next = f * c + i * np.tanh(_conv(x, p["W_xc"]) + _conv(h, p["W_hc"]) + b["c"])
    o = _sigmoid(_conv(x, p["W_xo"]) + _conv(h, p["W_ho"]) + p["W_co"] * c_next + b["o"])
    return o * np.tanh(c_next), c_next


def _random_cell(in_channels=2, hidden=3, kernel=3, height=4, width=5, seed=0) -> ConvLSTMCell:
    torch.manual_seed(seed)
    cell = ConvLSTMCell(in_channels, hidden, kernel, height, width).double()
    with torch.no_grad():
        for parameter in cell.parameters():   # peepholes too (they start at 0)
            parameter.uniform_(-0.6, 0.6)
    return cell


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_cell_is_its_equations_step_by_step(kernel):
    cell = _random_cell(kernel=kernel)
    p = {name: w.detach().numpy() for name, w in cell.gate_weights().items()}
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(5, 2, 2, 4, 5))                 # (steps, batch, in, H, W)
    h = rng.normal(size=(2, 3, 4, 5))
    c = rng.normal(size=(2, 3, 4, 5))
    state = (torch.tensor(h), torch.tensor(c))
    for x in xs:                                          # the recurrence, not only one step
        h, c = _reference_step(p, x, h, c)
        state = cell(torch.tensor(x), state)
        np.testing.assert_allclose(state[0].detach().numpy(), h, rtol=0, atol=1e-10)
        np.testing.assert_allclose(state[1].detach().numpy(), c, rtol=0, atol=1e-10)


def _equations_in_torch(p: dict, x, h, c):
    """The same equations with one convolution per weight, in torch, for autograd's gradients."""
    def conv(a, w):
        return F.conv2d(a, w, padding=w.shape[-1] // 2)

    def bias(g):
        return p[f"b_{g}"][None, :, None, None]

    i = torch.sigmoid(conv(x, p["W_xi"]) + conv(h, p["W_hi"]) + p["W_ci"] * c + bias("i"))
    f = torch.sigmoid(conv(x, p["W_xf"]) + conv(h, p["W_hf"]) + p["W_cf"] * c + bias("f"))
    c_next = f * c + i * torch.tanh(conv(x, p["W_xc"]) + conv(h, p["W_hc"]) + bias("c"))
    o = torch.sigmoid(conv(x, p["W_xo"]) + conv(h, p["W_ho"]) + p["W_co"] * c_next + bias("o"))
    return o * torch.tanh(c_next), c_next


def test_cell_gradients_are_the_equations_gradients():
    cell = _random_cell()
    generator = torch.Generator().manual_seed(2)
    x, h, c = (torch.randn(2, n, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
               for n in (2, 3, 3))
    weights = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64)
    h1, c1 = cell(x, (h, c))
    ((h1 * weights).sum() + (c1 ** 2).sum()).backward()
    ours = {name: w.grad.clone() for name, w in cell.named_parameters()}
    ours.update(x=x.grad.clone(), h=h.grad.clone(), c=c.grad.clone())

    # The paper's parameters as separate leaves: their gradients, mapped back to the cell's layout.
    leaves = {name: w.detach().clone().requires_grad_() for name, w in cell.gate_weights().items()}
    x2, h2, c2 = (t.detach().clone().requires_grad_() for t in (x, h, c))
    h_ref, c_ref = _equations_in_torch(leaves, x2, h2, c2)
    ((h_ref * weights).sum() + (c_ref ** 2).sum()).backward()
    conv_grad = torch.cat([torch.cat([leaves[f"W_x{g}"].grad, leaves[f"W_h{g}"].grad], dim=1) for g in "ifco"])
    bias_grad = torch.cat([leaves[f"b_{g}"].grad for g in "ifco"])
    expected = {"conv.weight": conv_grad, "conv.bias": bias_grad, "w_ci": leaves["W_ci"].grad,
                "w_cf": leaves["W_cf"].grad, "w_co": leaves["W_co"].grad,
                "x": x2.grad, "h": h2.grad, "c": c2.grad}
    assert set(expected) == set(ours)
    for name, grad in expected.items():
        torch.testing.assert_close(ours[name], grad, rtol=0, atol=1e-10, msg=name)


def test_cell_gradients_pass_gradcheck():
    """Analytic gradients against finite differences, for the inputs, the state and every parameter."""
    cell = _random_cell(in_channels=1, hidden=2, height=3, width=3)
    names = [name for name, _ in cell.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in cell.named_parameters())
    generator = torch.Generator().manual_seed(3)
    x, h, c = (torch.randn(1, n, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
               for n in (1, 2, 2))

    def step(x, h, c, *values):
        return torch.func.functional_call(cell, dict(zip(names, values)), (x, (h, c)))

    assert torch.autograd.gradcheck(step, (x, h, c, *params), eps=1e-6, atol=1e-7)


# --- parameter counts and shapes ----------------------------------------------------------------


def test_parameter_counts():
    # 4 gates x hidden 2 x (in 1 + hidden 2) x 3 x 3 = 216 conv weights, 8 biases, 3 x 2 x 4 x 5 = 120 peepholes
    assert cell_parameters(1, 2, 3, 4, 5) == 216 + 8 + 120
    assert count_parameters(ConvLSTMCell(1, 2, 3, 4, 5)) == 344
    for channels, hidden, layers, kernel in [(1, 2, 1, 3), (2, 4, 2, 5), (3, 3, 3, 1)]:
        model = ConvLSTMForecaster(channels, hidden, layers, kernel, 6, 7, horizon=3)
        assert count_parameters(model) == forecaster_parameters(channels, hidden, layers, kernel, 6, 7)
    # encoder and forecaster: 2 x 344; the 1x1 head: 2 x 1 weights + 1 bias
    assert forecaster_parameters(1, 2, 1, 3, 4, 5) == 2 * 344 + 3


def test_forecaster_shapes_and_starts_as_persistence():
    torch.manual_seed(0)
    model = ConvLSTMForecaster(2, 4, 2, 3, 5, 6, horizon=4)
    frames = torch.randn(3, 7, 2, 5, 6)
    out = model(frames)
    assert out.shape == (3, 4, 2, 5, 6)
    # The head starts at zero: every forecast frame is the last observed one until training moves it.
    torch.testing.assert_close(out, frames[:, -1:].expand(-1, 4, -1, -1, -1))
    assert model(frames, horizon=2).shape == (3, 2, 2, 5, 6)


# --- the gridded CSV -------------------------------------------------------------------------------


def grid_frame(frames: int = 24, height: int = 3, width: int = 4, seed: int = 0) -> pd.DataFrame:
    """A wave moving east, one row per (day, lat, lon)."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=frames, freq="D").strftime("%Y-%m-%d")
    t, lat, lon = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    y = np.sin(0.6 * (lon - t)) + 0.1 * lat + 0.02 * rng.normal(size=t.shape)
    return pd.DataFrame({"ds": np.asarray(times)[t.reshape(-1)], "lat": (45 + lat).reshape(-1),
                         "lon": (7 + 0.5 * lon).reshape(-1), "y": y.reshape(-1).round(6)})


@pytest.fixture
def grid_csv(tmp_path):
    path = tmp_path / "grid.csv"
    grid_frame().to_csv(path, index=False)
    return path


def test_read_grid_lays_rows_out_as_frames(tmp_path):
    frame = grid_frame(frames=7).sample(frac=1.0, random_state=0)       # any row order
    path = tmp_path / "g.csv"
    frame.to_csv(path, index=False)
    grid = read_grid(path, ["lat", "lon"])
    assert grid.values.shape == (7, 1, 3, 4) and grid.freq == "D"
    assert grid.coords == [["45", "46", "47"], ["7.0", "7.5", "8.0", "8.5"]]
    row = frame[(frame.ds == "2024-01-03") & (frame.lat == 46) & (frame.lon == 8.0)].iloc[0]
    assert grid.values[2, 0, 1, 2] == row.y
    assert list(grid.future_times(2).strftime("%Y-%m-%d")) == ["2024-01-08", "2024-01-09"]


@pytest.mark.parametrize("fill, expected", [("ffill", 1.0), ("interpolate", 2.0), ("zero", 0.0)])
def test_fill_policies_fill_a_cell_along_time(tmp_path, fill, expected):
    frame = grid_frame(frames=4, height=1, width=2)
    frame.loc[frame.lon == 7.0, "y"] = [0.0, 1.0, 99.0, 3.0]
    frame = frame.drop(index=frame.index[(frame.ds == "2024-01-03") & (frame.lon == 7.0)])  # a missing cell
    path = tmp_path / "g.csv"
    frame.to_csv(path, index=False)
    grid = read_grid(path, ["lat", "lon"], fill=fill, freq="D")  # Monday to Thursday: D or B, say which
    assert grid.values[2, 0, 0, 0] == expected
    assert grid.values[3, 0, 0, 0] == 3.0


# --- the CLI end to end -------------------------------------------------------------------------


def test_train_predict_evaluate_through_the_cli(tmp_path, grid_csv):
    run = tmp_path / "run"
    result = run_cli("train", grid_csv, "--out", run, "--grid-cols", "lat,lon", *TINY_GRID)
    assert result.exit_code == 0, result.stderr
    for name in (".lstmcast-run", "model.pt", "last.pt", "config.yaml", "history.csv", "metrics.json"):
        assert (run / name).is_file(), name
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["grid"] == ["lat", "lon"] and saved["data"]["lookback"] == 4
    assert saved["data"]["freq"] == "D" and saved["data"]["target"] == ["y"]
    assert len(pd.read_csv(run / "history.csv")) == 2
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["grid"]["shape"] == [3, 4] and payload["grid"]["coords"][1] == ["7.0", "7.5", "8.0", "8.5"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["validation"]) == {"model", "persistence"}

    out = tmp_path / "forecasts.csv"
    result = run_cli("predict", grid_csv, "--model", run, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "3 frames of 3x4 grid cells (36 rows)" in result.stderr
    forecasts = pd.read_csv(out, dtype={"lat": str, "lon": str})
    assert list(forecasts.columns) == ["ds", "lat", "lon", "y"]                  # the input's long format
    assert list(forecasts.ds.unique()) == ["2024-01-25", "2024-01-26", "2024-01-27"]
    assert len(forecasts) == 3 * 12 and forecasts.y.notna().all()
    first = forecasts[forecasts.ds == "2024-01-25"]
    assert list(first.lat) == ["45"] * 4 + ["46"] * 4 + ["47"] * 4                # as written, row-major
    assert list(first.lon[:4]) == ["7.0", "7.5", "8.0", "8.5"]
    shorter = run_cli("predict", grid_csv, "--model", run, "--out", tmp_path / "two.csv", "--horizon", "2")
    assert shorter.exit_code == 0 and len(pd.read_csv(tmp_path / "two.csv")) == 2 * 12
    np.testing.assert_allclose(pd.read_csv(tmp_path / "two.csv").y, pd.read_csv(out).y[:24], rtol=1e-6)

    scores = tmp_path / "scores.json"
    result = run_cli("evaluate", grid_csv, "--model", run, "--out", scores)
    assert result.exit_code == 0, result.stderr
    assert "3x4 grid" in result.stdout
    report = json.loads(scores.read_text())
    assert set(report["metrics"]) == {"model", "persistence", "seasonal_naive"}
    assert report["season_length"] == 7 and report["grid"] == {"shape": [3, 4], "cells": 12, "channels": 1}
    # The last 3 frames chose the best epoch: in-sample, and said so.
    assert report["in_sample"] == {"points": 36, "of": 36, "trained": 0, "early_stopping": 36, "calibration": 0}
    frame = grid_frame()
    actual = frame.y.to_numpy().reshape(24, 3, 4)
    persistence = np.abs(actual[-3:] - actual[-4]).mean()
    seasonal = np.abs(actual[-3:] - actual[-10:-7]).mean()
    assert report["metrics"]["persistence"]["mae"] == pytest.approx(persistence, rel=1e-9)
    assert report["metrics"]["seasonal_naive"]["mae"] == pytest.approx(seasonal, rel=1e-9)

    # Scored on frames after the file it trained on: nothing in-sample.
    cut = tmp_path / "cut.csv"
    frame[frame.ds < "2024-01-19"].to_csv(cut, index=False)
    held = tmp_path / "held"
    assert run_cli("train", cut, "--out", held, "--grid-cols", "lat,lon", *TINY_GRID).exit_code == 0
    result = run_cli("evaluate", grid_csv, "--model", held, "--windows", "2", "--out", tmp_path / "h.json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "h.json").read_text())
    assert report["in_sample"]["points"] == 0 and len(report["per_window"]) == 2

    assert error_line(run_cli("plot", grid_csv, "--model", run, "--out", tmp_path / "p.png"),
                      "gridded (ConvLSTM) run")


def test_resume_continues_exactly(tmp_path, grid_csv):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ["--grid-cols", "lat,lon", *TINY_GRID]
    assert run_cli("train", grid_csv, "--out", straight, *args, "--set", "train.epochs=3").exit_code == 0
    assert run_cli("train", grid_csv, "--out", resumed, *args).exit_code == 0
    result = run_cli("train", grid_csv, "--out", resumed, "--resume", "--set", "train.epochs=3")
    assert result.exit_code == 0, result.stderr
    assert "resuming at epoch 3" in result.stderr
    a = torch.load(straight / "model.pt", weights_only=True)["models"][0]
    b = torch.load(resumed / "model.pt", weights_only=True)["models"][0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(pd.read_csv(resumed / "history.csv")) == 3
    error_line(run_cli("train", grid_csv, "--out", resumed, "--resume", "--set", "model.conv_kernel=5"),
               "model.conv_kernel", "--resume")


# --- user errors: one line, exit 2 ---------------------------------------------------------------


def _write(tmp_path, frame: pd.DataFrame):
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


def _train(path, out, *extra):
    return run_cli("train", path, "--out", out, "--grid-cols", "lat,lon", *TINY_GRID, *extra)


def test_a_frame_without_its_whole_grid(tmp_path):
    frame = grid_frame()
    frame = frame.drop(index=frame.index[(frame.ds == "2024-01-05") & (frame.lat == 46) & (frame.lon == 7.5)])
    path = _write(tmp_path, frame)
    error_line(_train(path, tmp_path / "run"), "bad.csv", "timestamp 2024-01-05 lacks 1 of 12 grid cells",
               "lat=46, lon=7.5", "data.fill=ffill")
    assert not (tmp_path / "run").exists()
    assert _train(path, tmp_path / "run", "--set", "data.fill=interpolate").exit_code == 0


def test_missing_timestamp_and_empty_value(tmp_path):
    frame = grid_frame()
    error_line(_train(_write(tmp_path, frame[frame.ds != "2024-01-07"]), tmp_path / "r1"),
               "timestamp 2024-01-07 has no rows", "1 missing timestamps")
    frame.loc[5, "y"] = np.nan
    error_line(_train(_write(tmp_path, frame), tmp_path / "r2"), "has an empty value", "data.fill")


def test_duplicate_row(tmp_path):
    frame = grid_frame()
    frame = pd.concat([frame, frame.iloc[[13]]], ignore_index=True)
    error_line(_train(_write(tmp_path, frame), tmp_path / "run"), f"line {len(frame) + 1}",
               "timestamp 2024-01-02, lat=45, lon=7.5 appears again (first on line 15)")


@pytest.mark.parametrize("extra, fragments", [
    (["--grid-cols", "lat,lon,alt"], ["1 or 2 coordinate columns"]),
    (["--grid-cols", "lat,height"], ["column 'height' not found", "--grid-cols"]),
    (["--set", "model.attention=true"], ["'model.attention' does not apply to gridded runs"]),
    (["--set", "model.conv_kernel=4"], ["'model.conv_kernel' must be odd"]),
    (["--set", "train.loss=smape"], ["gridded runs train with mse | mae | huber"]),
    (["--horizon", "9"], ["24 frames", "lookback + 2 x horizon = 28"]),
])
def test_config_and_column_errors(tmp_path, grid_csv, extra, fragments):
    args = ["train", grid_csv, "--out", tmp_path / "run", "--grid-cols", "lat,lon", *TINY_GRID, *extra]
    if extra[0] == "--horizon":
        args[-4:-2] = ["--lookback", "10"]   # lookback 10 + 2 x 9 > 24 frames
    error_line(run_cli(*args), *fragments)


def test_one_coordinate_written_two_ways(tmp_path):
    frame = grid_frame().astype({"lon": object})
    frame.loc[3, "lon"] = "8.50"
    error_line(_train(_write(tmp_path, frame), tmp_path / "run"), "column 'lon'", "'8.50' and '8.5' are the same")


def test_reading_a_grid_does_not_load_torch():
    import subprocess
    import sys

    code = "import lstmcast.spatial, lstmcast.spatial.grid, sys; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip() == "False"


def test_predict_on_another_grid(tmp_path, grid_csv):
    run = tmp_path / "run"
    assert _train(grid_csv, run).exit_code == 0
    frame = grid_frame()
    frame.loc[frame.lon == 8.5, "lon"] = 9.0
    error_line(run_cli("predict", _write(tmp_path, frame), "--model", run, "--out", tmp_path / "f.csv"),
               "column 'lon'", "'9.0' is not on the grid the run was trained on")
    error_line(run_cli("predict", _write(tmp_path, grid_frame(frames=3)), "--model", run, "--out", tmp_path / "f.csv"),
               "3 frames", "data.lookback")
    error_line(run_cli("predict", grid_csv, "--model", run, "--out", grid_csv), "is also an input")
