"""Quantile forecasts and prediction intervals: `--quantiles`, the pinball loss, conformal calibration,
interval metrics in evaluate, and the q_ columns in predict and plot."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SALES, TINY, run_cli

from lstmcast.checkpoint import load_checkpoint, save_checkpoint
from lstmcast.config import load_config, quantile_pairs
from lstmcast.errors import LstmcastError
from lstmcast.evaluate import backtest, evaluate
from lstmcast.metrics import interval_metrics, pinball_loss, quantile_metrics
from lstmcast.model import Ensemble, Forecaster, forecast_windows
from lstmcast.predict import load_run, read_for_run
from lstmcast.quantiles import conformal_correction, interval_scores, keep_monotone, widen
from lstmcast.train import MaseLoss, PinballLoss, calibrate, calibration_starts, make_loss, split_parts
from lstmcast.windows import SeriesBuffer

LEVELS = [0.1, 0.5, 0.9]
# calendar none: test_checkpoint_holds_the_corrections_as_plain_lists rebuilds a bare buffer.
QUANTILE_RUN = ["--quantiles", "0.1,0.5,0.9", "--set", "model.conformal=true", "--set", "data.calendar=none"]


@pytest.fixture(scope="module")
def quantile_run(tmp_path_factory):
    """Two members with quantiles 0.1 / 0.5 / 0.9 and conformal calibration, on the monthly sample."""
    out = tmp_path_factory.mktemp("runs") / "quantiles"
    result = run_cli("train", SALES, "--out", out, *TINY, *QUANTILE_RUN, "--set", "train.epochs=2",
                     "--set", "train.ensemble=2")
    assert result.exit_code == 0, result.stderr
    assert "validation intervals (before conformal calibration)" in result.stderr
    # The 11 stores of 96 months calibrate on their last year; store_12 (36) is too short (3 x 12 + 1).
    assert "conformal corrections from 11 calibration windows" in result.stderr
    return out


def inputs_of(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random model inputs (batch, length, 2), the first few steps of some windows padding."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, length, generator=generator) * 3 + 5
    observed = torch.ones(batch, length)
    observed[: batch // 2, : length // 3] = 0.0
    return torch.stack([values * observed, observed], dim=-1)


def assert_sorted(quantiles: torch.Tensor) -> None:
    """Levels ascending along the last dimension for every (window, step)."""
    assert (quantiles.diff(dim=-1) >= 0).all()


# --- metrics and losses by hand ------------------------------------------------------------------

def test_pinball_loss_by_hand():
    actual = np.array([[1.0, 2.0], [3.0, 4.0]])
    forecast = np.array([[2.0, 2.0], [1.0, 5.0]])
    # y - q = -1, 0, 2, -1. Level 0.9: 0.1 * 1, 0, 0.9 * 2, 0.1 * 1 -> 2.0 / 4.
    assert pinball_loss(actual, forecast, 0.9) == pytest.approx(0.5)
    # Level 0.1: 0.9, 0, 0.2, 0.9 -> 2.0 / 4. Level 0.5: half the MAE (4 / 4).
    assert pinball_loss(actual, forecast, 0.1) == pytest.approx(0.5)
    assert pinball_loss(actual, forecast, 0.5) == pytest.approx(0.5)
    assert pinball_loss(actual, actual, 0.3) == 0.0


def test_interval_metrics_by_hand():
    actual = np.array([[1.0, 5.0], [3.0, 10.0]])
    lower = np.array([[0.0, 6.0], [3.0, 0.0]])
    upper = np.array([[2.0, 7.0], [4.0, 9.0]])
    # Inside: 1 in [0, 2], 3 in [3, 4] (ends count); 5 and 10 outside. Widths 2, 1, 1, 9.
    assert interval_metrics(actual, lower, upper, 0.8) == {"nominal": 0.8, "coverage": 0.5, "width": 3.25}
    # All of it for levels 0.1 / 0.5 / 0.9 when only 0.1 and 0.9 were asked for.
    median = np.array([[1.0, 6.5], [3.5, 5.0]])
    stacked = np.stack([lower, median, upper], axis=-1)
    report = quantile_metrics(actual, stacked, (0.1, 0.5, 0.9), [0.9, 0.1])
    assert report["intervals"] == {"0.1-0.9": {"nominal": 0.8, "coverage": 0.5, "width": 3.25}}
    assert list(report["quantile_loss"]) == ["0.1", "0.9"]
    assert report["quantile_loss"]["0.1"] == pytest.approx(pinball_loss(actual, lower, 0.1))
    assert quantile_pairs([0.05, 0.1, 0.5, 0.9, 0.95, 0.3]) == [(0.05, 0.95), (0.1, 0.9)]
    nominal = quantile_metrics(actual, np.stack([lower, median, upper], -1), (0.05, 0.5, 0.95), [0.05, 0.95])
    assert nominal["intervals"]["0.05-0.95"]["nominal"] == 0.9    # not 0.8999999999999999


def test_pinball_training_loss_by_hand():
    prediction = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]])       # (1 window, 2 steps, 3 levels)
    target = torch.tensor([[1.5, 0.0]])
    loss = PinballLoss((0.1, 0.5, 0.9))
    # Step 1: y - q = 1.5, 0.5, -0.5 -> 0.15, 0.25, 0.05. Step 2: -1 each -> 0.9, 0.5, 0.1.
    expected = (0.15 + 0.25 + 0.05 + 0.9 + 0.5 + 0.1) / 6
    torch.testing.assert_close(loss(prediction, target, None, None), torch.tensor(expected))
    # With train.loss mase: divided by the window's seasonal scale (4.5, as in MaseLoss's test) / scale.
    values = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    inputs = torch.stack([values, torch.ones(1, 4)], dim=-1)
    scale = torch.tensor([[2.0]])
    mase = make_loss("mase", 2, (0.1, 0.5, 0.9))
    assert isinstance(mase, PinballLoss) and isinstance(mase.mase, MaseLoss)
    torch.testing.assert_close(mase(prediction, target, inputs, scale), torch.tensor(expected / (4.5 / 2.0)))
    assert isinstance(make_loss("mse", 12, (0.1, 0.5, 0.9)), PinballLoss)


def test_conformal_correction_by_hand():
    scores = torch.tensor([[3.0, -1.0], [1.0, -2.0], [2.0, -3.0], [4.0, -4.0]])   # (n 4, horizon 2)
    # ceil((n + 1) * coverage)-th smallest per step: coverage 0.5 -> 3rd; 0.8 -> 4th.
    assert conformal_correction(scores, 0.5).tolist() == [3.0, -2.0]
    assert conformal_correction(scores, 0.8).tolist() == [4.0, -1.0]
    # 0.9 would need the 5th of 4 (an infinite correction): the largest score instead.
    assert conformal_correction(scores, 0.9).tolist() == [4.0, -1.0]
    # Scores: how far outside the interval (positive) or inside (negative), per the window's scale.
    quantiles = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]])
    target = torch.tensor([[5.0, 2.5]])
    scores = interval_scores(quantiles, target, (0, 2), torch.tensor([[2.0]]))
    assert scores.tolist() == [[1.0, -0.25]]        # 5 - 3 = 2 above; 2.5 is 0.5 inside the nearer end


def test_keep_monotone_and_widen_keep_the_median():
    crossed = torch.tensor([[3.0, 1.0, 2.0, 1.5, 4.0]])
    assert keep_monotone(crossed, 2).tolist() == [[1.0, 2.0, 2.0, 2.0, 4.0]]
    quantiles = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 3.0, 4.0]]])   # (1, 2 steps, 5)
    corrections = torch.tensor([[0.5, -3.0], [1.0, 0.0]])       # pairs (0, 4) and (1, 3), per step
    out = widen(quantiles, corrections, [(0, 4), (1, 3)], 2, torch.tensor([[2.0]]))
    # Step 1: outer pair -/+ 1, inner pair -/+ 2. Step 2: the outer pair narrowed by 6 crosses the
    # median: clipped to it, the inner pair unchanged.
    assert out.tolist() == [[[0.0, 0.0, 3.0, 6.0, 6.0], [1.0, 2.0, 2.0, 2.0, 3.0]]]


# --- the model: non-crossing by construction -----------------------------------------------------

@pytest.mark.parametrize("window_norm", ["none", "standard", "mean"])
def test_quantile_outputs_never_cross(window_norm):
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    config = load_config(None, {"model.hidden_size": 8, "data.horizon": 4, "model.quantiles": levels,
                                "model.window_norm": window_norm, "train.ensemble": 3})
    torch.manual_seed(0)
    members = [Forecaster(config.model, 4, lookback).eval() for lookback in (6, 9, 9)]
    with torch.no_grad():
        for member in members:   # large random gap weights: the construction, not the init, keeps order
            member.spread.weight.normal_(0, 5.0)
    inputs = inputs_of(64, 9)
    with torch.no_grad():
        single = members[0](inputs)
        assert single.shape == (64, 4, 5)
        assert_sorted(single)
        prediction, loc, scale = members[0].normalized(inputs)       # the normalised-units contract
        assert prediction.shape == (64, 4, 5) and loc.shape == scale.shape == (64, 1)
        torch.testing.assert_close(single, prediction * scale[..., None] + loc[..., None])
        # The ensemble: the element-wise median of each level over the members, still in order.
        ensemble = Ensemble(members).eval()
        median = ensemble(inputs)
        assert_sorted(median)
        torch.testing.assert_close(median, torch.stack([m(inputs) for m in members]).quantile(0.5, dim=0))
        # Conformal corrections of either sign, some large enough to cross: still in order, median kept.
        corrections = torch.randn(2, 4, generator=torch.Generator().manual_seed(1)) * 3
        conformal = {"pairs": [[0.05, 0.95], [0.25, 0.75]], "corrections": corrections.tolist()}
        corrected = Ensemble(members, conformal).eval()(inputs)
        assert_sorted(corrected)
        torch.testing.assert_close(corrected[..., 2], median[..., 2])
        assert not torch.allclose(corrected, median)


def test_point_model_is_unchanged_by_the_quantile_option():
    """No quantiles: no new parameters and the same weights from the same seed."""
    point = load_config(None, {"model.hidden_size": 8, "data.horizon": 3})
    quantile = load_config(None, {"model.hidden_size": 8, "data.horizon": 3, "model.quantiles": "0.1,0.9"})
    torch.manual_seed(3)
    a = Forecaster(point.model, 3, 9)
    torch.manual_seed(3)
    b = Forecaster(quantile.model, 3, 9)
    assert a.levels is None and b.levels == (0.1, 0.5, 0.9)
    assert set(b.state_dict()) - set(a.state_dict()) == {"spread.weight", "spread.bias"}
    for name, tensor in a.state_dict().items():   # the shared part is drawn first, identically
        torch.testing.assert_close(tensor, b.state_dict()[name])
    assert a(inputs_of(2, 9)).shape == (2, 3)


# --- the CLI: train, predict, evaluate, plot -----------------------------------------------------

def test_predict_writes_quantile_columns(quantile_run, tmp_path):
    out = tmp_path / "f.csv"
    result = run_cli("predict", SALES, "--model", quantile_run, "--out", out)
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["unique_id", "ds", "forecast", "q_0.1", "q_0.5", "q_0.9"]
    assert len(frame) == 12 * 12 and np.isfinite(frame.iloc[:, 2:].to_numpy()).all()
    assert (frame["forecast"] == frame["q_0.5"]).all()
    assert (frame["q_0.1"] <= frame["q_0.5"]).all() and (frame["q_0.5"] <= frame["q_0.9"]).all()
    assert (frame["q_0.1"] < frame["q_0.9"]).mean() > 0.9          # real intervals, not collapsed

    short = tmp_path / "short.csv"
    result = run_cli("predict", SALES, "--model", quantile_run, "--out", short, "--horizon", 3)
    assert result.exit_code == 0, result.stderr
    first = pd.read_csv(short)
    assert list(first.columns) == list(frame.columns)
    assert first.groupby("unique_id").size().tolist() == [3] * 12
    # The first 3 steps of the full forecast, every column.
    expected = frame.groupby("unique_id").head(3).reset_index(drop=True)
    pd.testing.assert_frame_equal(first, expected)


def test_checkpoint_holds_the_corrections_as_plain_lists(quantile_run):
    payload = torch.load(quantile_run / "model.pt", map_location="cpu", weights_only=True)
    assert payload["format_version"] == 4 and len(payload["models"]) == 2
    assert payload["config"]["model"]["quantiles"] == LEVELS and payload["config"]["model"]["conformal"] is True
    conformal = payload["conformal"]
    assert conformal["pairs"] == [[0.1, 0.9]] and conformal["names"] == ["0.1-0.9"]
    assert conformal["n_calibration"] == 11 and conformal["windows"].startswith("calibration windows")
    assert len(conformal["corrections"]) == 1 and len(conformal["corrections"][0]) == 12
    assert all(isinstance(c, float) and math.isfinite(c) for c in conformal["corrections"][0])
    metrics = json.loads((quantile_run / "metrics.json").read_text())
    assert metrics["conformal"] == conformal
    assert set(metrics["intervals"]) == {"0.1-0.9"} and set(metrics["quantile_loss"]) == {"0.1", "0.5", "0.9"}
    run = load_run(quantile_run)
    assert run.levels == (0.1, 0.5, 0.9) and run.quantiles == LEVELS
    torch.testing.assert_close(run.model.corrections, torch.tensor(conformal["corrections"]))

    # The corrections are what calibrate() computes from the calibration windows of the same run:
    # the last 12 points of the 11 stores long enough, after their early-stopping windows.
    series = read_for_run(run, SALES)
    raw = Ensemble.from_weights(run.config, payload["models"]).eval()
    scaled = [(v - lo) / sc for v, lo, sc in zip(series.values, run.scaler.loc, run.scaler.scale)]
    buffer = SeriesBuffer.build(scaled, run.config.input_length, torch.device("cpu"))
    windows = calibration_starts(buffer, split_parts(series.lengths(), 12, conformal=True))
    torch.testing.assert_close(windows, buffer.target_starts(12)[:11])
    again = calibrate(raw, buffer, windows, 12, None)
    np.testing.assert_allclose(again["corrections"], conformal["corrections"], rtol=1e-6)
    # ... and applied per step in window-normalised units: q_0.9 moves up by c * the window's scale.
    starts = buffer.forecast_starts()
    before = forecast_windows(raw, buffer.inputs, starts, None)
    after = forecast_windows(run.model, buffer.inputs, starts, None)
    shift = (after[..., 2] - before[..., 2]) / raw.conformal_scale(buffer.inputs(starts))
    moved = after[..., 2] > after[..., 1]                           # not clipped to the median
    torch.testing.assert_close(shift[moved], run.model.corrections[0].expand_as(shift)[moved], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after[..., 1], before[..., 1])


def test_old_checkpoint_without_quantile_keys_still_predicts(sales_run, tmp_path):
    """A run saved before quantiles existed: no model.quantiles / model.conformal, no "conformal"."""
    old = tmp_path / "old"
    shutil.copytree(sales_run, old)
    payload = load_checkpoint(old / "model.pt")
    for key in ("quantiles", "conformal"):
        del payload["config"]["model"][key]
    payload.pop("conformal", None)
    del payload["format_version"]
    save_checkpoint(payload, old / "model.pt")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run_cli("predict", SALES, "--model", old, "--out", a).exit_code == 0
    assert run_cli("predict", SALES, "--model", sales_run, "--out", b).exit_code == 0
    assert list(pd.read_csv(a).columns) == ["unique_id", "ds", "forecast"]
    assert a.read_text() == b.read_text()
    report = evaluate(SALES, old)
    assert "intervals" not in report and "quantile_loss" not in report


def test_only_requested_levels_get_columns_and_the_median_is_learnt(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *TINY, "--quantiles", "0.75,0.25", "--set", "train.epochs=1",
                     "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    run = load_run(out)
    assert run.levels == (0.25, 0.5, 0.75) and run.quantiles == [0.25, 0.75]
    assert "conformal" not in torch.load(out / "model.pt", weights_only=True)
    forecasts = tmp_path / "f.csv"
    assert run_cli("predict", SALES, "--model", out, "--out", forecasts).exit_code == 0
    frame = pd.read_csv(forecasts)
    assert list(frame.columns) == ["unique_id", "ds", "forecast", "q_0.25", "q_0.75"]
    assert (frame["q_0.25"] <= frame["forecast"]).all() and (frame["forecast"] <= frame["q_0.75"]).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert "conformal" not in metrics and list(metrics["quantile_loss"]) == ["0.25", "0.75"]


def test_evaluate_reports_intervals(quantile_run, sales_run, tmp_path):
    out = tmp_path / "m.json"
    result = run_cli("evaluate", SALES, "--model", quantile_run, "--out", out, "--windows", 2)
    assert result.exit_code == 0, result.stderr
    assert "prediction intervals (model)" in result.stdout and "q_0.1..q_0.9" in result.stdout
    report = json.loads(out.read_text())
    assert list(report) == ["data", "run", "horizon", "season_length", "n_series", "metrics", "intervals",
                            "quantile_loss", "windows", "step", "per_window", "in_sample"]
    assert list(report["intervals"]) == ["0.1-0.9"]
    interval = report["intervals"]["0.1-0.9"]
    assert set(interval) == {"nominal", "coverage", "width"} and interval["nominal"] == 0.8
    assert 0.0 <= interval["coverage"] <= 1.0 and interval["width"] > 0
    assert list(report["quantile_loss"]) == ["0.1", "0.5", "0.9"]

    # By hand from the backtest's forecasts; q_0.5 is the point forecast the metrics score.
    run = load_run(quantile_run)
    result = backtest(run, read_for_run(run, SALES), windows=2, season=12)
    assert result.quantiles.shape == (24, 12, 3)
    np.testing.assert_array_equal(result.forecasts["model"], result.quantiles[..., 1])
    lower, upper, actual = result.quantiles[..., 0], result.quantiles[..., 2], result.actual
    inside = (actual >= lower) & (actual <= upper)
    assert interval["coverage"] == pytest.approx(inside.mean())
    assert interval["width"] == pytest.approx(np.mean(upper - lower))
    assert report["quantile_loss"]["0.5"] == pytest.approx(report["metrics"]["model"]["mae"] / 2)
    for window in report["per_window"]:
        assert list(window) == ["window", "steps_before_end", "n_series", "metrics", "intervals", "quantile_loss",
                                "in_sample"]
        rows = result.window == window["window"]
        assert window["intervals"]["0.1-0.9"]["coverage"] == pytest.approx(inside[rows].mean())
    # A window no series reaches (84 points before the end; the stores have 96 and 36): null.
    oldest = evaluate(SALES, quantile_run, windows=8)["per_window"][0]
    assert oldest["n_series"] == 0 and oldest["intervals"] is None and oldest["quantile_loss"] is None

    # A point run: no interval keys, no interval table.
    point = run_cli("evaluate", SALES, "--model", sales_run, "--out", tmp_path / "p.json", "--windows", 2)
    assert point.exit_code == 0, point.stderr
    assert "prediction intervals" not in point.stdout
    plain = json.loads((tmp_path / "p.json").read_text())
    assert "intervals" not in plain and "quantile_loss" not in plain
    assert all("intervals" not in w for w in plain["per_window"])


def test_plot_shades_the_interval(quantile_run, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.collections import PolyCollection

    import lstmcast.plot as plot_module

    figures = []
    real_save = plot_module._save
    monkeypatch.setattr(plot_module, "_save", lambda fig, *a: (figures.append(fig), real_save(fig, *a)))
    info = plot_module.plot_forecasts(SALES, quantile_run, tmp_path / "q.png", series_ids=["store_01", "store_02"])
    assert info.bands == [("q_0.1", "q_0.9")]
    for ax in figures[0].axes:
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 1
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"


def test_refit_corrections_come_from_the_pre_refit_weights(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *TINY, *QUANTILE_RUN, "--set", "train.epochs=1",
                     "--set", "train.refit_epochs=1", "--quiet")
    assert result.exit_code == 0, result.stderr
    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "model.pt", weights_only=True)
    run = load_run(out)
    series = read_for_run(run, SALES)
    scaled = [(v - lo) / sc for v, lo, sc in zip(series.values, run.scaler.loc, run.scaler.scale)]
    buffer = SeriesBuffer.build(scaled, run.config.input_length, torch.device("cpu"))
    starts = calibration_starts(buffer, split_parts(series.lengths(), 12, conformal=True))
    held_out = Ensemble.from_weights(run.config, [last["best_weights"]]).eval()
    refitted = Ensemble.from_weights(run.config, best["models"]).eval()
    recorded = np.array(best["conformal"]["corrections"])
    np.testing.assert_allclose(calibrate(held_out, buffer, starts, 12, None)["corrections"], recorded, rtol=1e-6)
    assert not np.allclose(calibrate(refitted, buffer, starts, 12, None)["corrections"], recorded)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quantiles_on_gpu_with_bf16(tmp_path):
    """bf16 autocast training and calibration on CUDA; the run predicts on the CPU and on the GPU."""
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, "--device", "cuda", *TINY, *QUANTILE_RUN, "--set", "train.epochs=2",
                     "--set", "train.precision=bf16")      # auto would take fp32 for a model this small
    assert result.exit_code == 0, result.stderr
    assert "precision bf16" in result.stderr
    corrections = json.loads((out / "metrics.json").read_text())["conformal"]["corrections"][0]
    assert len(corrections) == 12 and np.isfinite(corrections).all()
    frames = {}
    for device in ("cpu", "cuda"):
        path = tmp_path / f"{device}.csv"
        done = run_cli("predict", SALES, "--model", out, "--out", path, "--device", device)
        assert done.exit_code == 0, done.stderr
        frames[device] = frame = pd.read_csv(path)
        assert (frame["q_0.1"] <= frame["q_0.5"]).all() and (frame["q_0.5"] <= frame["q_0.9"]).all()
        assert (frame["forecast"] == frame["q_0.5"]).all()
    # fp32 on the CPU, bf16 on the GPU: close, not identical. Measured against the interval's own
    # width, so a GPU head that were off by a fraction of an interval fails.
    width = (frames["cpu"]["q_0.9"] - frames["cpu"]["q_0.1"]).mean()
    assert width > 0
    for name in ("q_0.1", "q_0.5", "q_0.9"):
        assert (frames["cpu"][name] - frames["cuda"][name]).abs().max() < 0.1 * width, name


# --- calibration on data whose truth is known ----------------------------------------------------

def seasonal_csv(path, n_series: int, length: int, seed: int = 0) -> None:
    """Monthly series: level + seasonal sine + Gaussian noise of sd 0.3 x the seasonal amplitude."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    frames = []
    for i in range(n_series):
        level, phase = rng.uniform(50, 150), rng.uniform(0, 2 * np.pi)
        amplitude = level * rng.uniform(0.1, 0.3)
        y = level + amplitude * np.sin(2 * np.pi * t / 12 + phase) + rng.normal(0, 0.3 * amplitude, length)
        frames.append(pd.DataFrame({"unique_id": f"s{i:03d}",
                                    "ds": pd.date_range("2015-01-01", periods=length, freq="MS"), "y": y}))
    pd.concat(frames).to_csv(path, index=False)


def test_conformal_intervals_reach_nominal_coverage_out_of_sample(tmp_path):
    """80 series; train on 60 months, evaluate on the next 12 (unseen): 960 points.

    The corrections come from the 80 calibration windows (the last 12 of the 60 months, after the
    early-stopping windows: neither trained on nor used to choose the epoch), so the out-of-sample coverage of the 80%
    interval is 0.8 up to sampling noise: about 0.045 per step from 80 calibration points, averaged
    over 12 steps, plus 0.013 from 960 test points, some 0.02 in all; 0.7..0.9 is 5 of those. After
    2 epochs the tiny model's own intervals are too narrow (about 0.67 here): the same weights
    without the corrections must do clearly worse, and the corrections must widen.
    """
    full, cut = tmp_path / "full.csv", tmp_path / "train.csv"
    seasonal_csv(full, 80, 72)
    pd.read_csv(full).groupby("unique_id").head(60).to_csv(cut, index=False)
    out = tmp_path / "run"
    result = run_cli("train", cut, "--out", out, *TINY, *QUANTILE_RUN, "--horizon", 12, "--lookback", 24,
                     "--set", "model.window_norm=standard", "--set", "train.epochs=2", "--quiet")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["conformal"]["n_calibration"] == 80
    corrections = np.array(metrics["conformal"]["corrections"][0])
    validation_coverage = metrics["intervals"]["0.1-0.9"]["coverage"]
    # Under-covering on the early-stopping windows -> the intervals are widened on average.
    assert validation_coverage < 0.8 and corrections.mean() > 0

    report = evaluate(full, out)
    conformal = report["intervals"]["0.1-0.9"]
    assert 0.7 <= conformal["coverage"] <= 0.9, conformal
    run = load_run(out)
    run.model.corrections = None                                   # the same weights, uncalibrated
    raw = backtest(run, read_for_run(run, full), season=12)
    raw_coverage = quantile_metrics(raw.actual, raw.quantiles, run.levels, run.quantiles)["intervals"]["0.1-0.9"]
    assert abs(conformal["coverage"] - 0.8) < abs(raw_coverage["coverage"] - 0.8) - 0.05
    assert conformal["width"] > raw_coverage["width"]


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("option, message", [
    (["--quantiles", "0"], "every item must be strictly between 0 and 1"),
    (["--quantiles", "0.1,1"], "every item must be strictly between 0 and 1"),
    (["--quantiles", "1.5"], "every item must be strictly between 0 and 1"),
    (["--quantiles", "0.1,0.9,0.1"], "0.1 is listed twice"),
    (["--quantiles", "0.1,high"], "must be a list of float"),
    (["--quantiles", "nan"], "every item must be a finite number"),
    (["--set", "model.quantiles=[0.5, -0.2]"], "every item must be strictly between 0 and 1"),
    (["--set", "model.quantiles=[0.5, 0.5]"], "0.5 is listed twice"),
    (["--set", "model.quantiles=0.12345678"], "more than 6 significant digits"),
])
def test_bad_quantiles_exit_2(tmp_path, option, message):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *option)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("lstmcast: error: config key 'model.quantiles'")
    assert message in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("quantiles", [[], ["--quantiles", "0.1,0.5"]])
def test_conformal_needs_a_symmetric_pair(tmp_path, quantiles):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *quantiles, "--set", "model.conformal=true")
    assert result.exit_code == 2
    assert result.stderr.startswith("lstmcast: error: config key 'model.conformal' calibrates symmetric pairs")
    assert not out.exists()


def test_quantiles_in_a_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  quantiles: [0.9, 0.1, 0.5]\n  conformal: true\n")
    config = load_config(path)
    assert config.model.quantiles == [0.9, 0.1, 0.5] and config.model.levels == (0.1, 0.5, 0.9)
    assert load_config(None, {"model.quantiles": "0.05,0.95"}).model.levels == (0.05, 0.5, 0.95)
    assert load_config(None, {"model.quantiles": 0.9}).model.quantiles == [0.9]
    with pytest.raises(LstmcastError, match="'model.quantiles': every item must be strictly between 0 and 1"):
        load_config(None, {"model.quantiles": [1, 0.5]})
