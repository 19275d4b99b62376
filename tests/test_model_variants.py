"""model.cell / model.bidirectional / model.attention: wired through config, CLI, checkpoints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SALES, TINY, run_cli

from lstmcast.cells import parameter_count
from lstmcast.config import load_config
from lstmcast.model import Forecaster, count_parameters
from lstmcast.predict import forecast, load_run, read_for_run
from lstmcast.train import train

VARIANTS = [("lstm", False, False), ("peephole", False, False), ("cifg", False, False),
            ("gru", False, False), ("lstm", True, False), ("peephole", True, True), ("gru", False, True)]


def model_config(cell: str, bidirectional: bool = False, attention: bool = False, hidden: int = 6):
    return load_config(None, {"model.cell": cell, "model.bidirectional": bidirectional,
                              "model.attention": attention, "model.hidden_size": hidden,
                              "model.layers": 2}).model


def test_default_model_is_the_plain_nn_lstm_with_unchanged_parameter_names():
    model = Forecaster(model_config("lstm"), horizon=3, lookback=9)
    assert isinstance(model.encoder, torch.nn.LSTM)
    assert sorted(model.state_dict()) == sorted(
        [f"encoder.{kind}_{part}_l{k}" for kind in ("weight", "bias") for part in ("ih", "hh")
         for k in (0, 1)] + ["head.weight", "head.bias"])


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("attention", [False, True])
def test_parameter_counts(cell, bidirectional, attention):
    hidden, horizon = 6, 3
    model = Forecaster(model_config(cell, bidirectional, attention, hidden), horizon=horizon, lookback=9)
    width = hidden * (2 if bidirectional else 1)
    summary = 2 * width if attention else width
    expected = (parameter_count(cell, 2, hidden, layers=2, bidirectional=bidirectional)
                + summary * horizon + horizon + (width * width if attention else 0))
    assert count_parameters(model) == expected
    lstm = count_parameters(Forecaster(model_config("lstm", bidirectional, attention, hidden), horizon, 9))
    if cell == "peephole":
        assert count_parameters(model) - lstm == 3 * hidden * 2 * (2 if bidirectional else 1)
    if cell in ("cifg", "gru"):
        assert count_parameters(model) < lstm


def test_attention_weights_ignore_padding_and_sum_to_one():
    model = Forecaster(model_config("lstm", attention=True), horizon=3, lookback=8).eval()
    values = torch.randn(4, 8)
    observed = torch.ones(4, 8)
    observed[1, :5] = 0.0  # a short series: 5 padding steps
    with torch.no_grad():
        model(torch.stack([values * observed, observed], dim=-1))
    weights = model.attention_weights
    assert weights.shape == (4, 8)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))
    assert (weights[1, :5] == 0).all() and (weights[1, 5:] > 0).all()


def test_bidirectional_summary_reads_both_final_states():
    model = Forecaster(model_config("lstm", bidirectional=True), horizon=3, lookback=7).eval()
    x = torch.randn(2, 7, 2)
    states, (h_n, _) = model.encoder(x)
    # The forward half at the last step and the backward half at the first are the final states.
    torch.testing.assert_close(model.summary(states, x[..., 1]), torch.cat([h_n[-2], h_n[-1]], dim=-1))


@pytest.mark.parametrize("cell,bidirectional,attention", VARIANTS)
def test_every_variant_trains_saves_and_predicts_through_the_cli(tmp_path, cell, bidirectional, attention):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *TINY, "--set", "train.epochs=2",
                     "--set", f"model.cell={cell}", "--set", f"model.bidirectional={bidirectional}",
                     "--set", f"model.attention={attention}")
    assert result.exit_code == 0, result.stderr
    run = load_run(out)
    assert (run.config.model.cell, run.config.model.bidirectional, run.config.model.attention) == (
        cell, bidirectional, attention)
    series = read_for_run(run, SALES)
    values = forecast(run, series)
    assert values.shape == (len(series), 12) and np.isfinite(values).all()
    forecasts = tmp_path / "f.csv"
    assert run_cli("predict", SALES, "--model", out, "--out", forecasts).exit_code == 0
    np.testing.assert_allclose(pd.read_csv(forecasts)["forecast"].to_numpy(), values.reshape(-1), rtol=1e-6)


def test_unknown_cell_is_a_user_error(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, "--set", "model.cell=lstn")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("lstmcast: error: config key 'model.cell' must be one of "
                                     "lstm|peephole|cifg|gru|grid, got 'lstn'")
    assert not out.exists()


@pytest.mark.parametrize("cell,bidirectional,attention",
                         [("lstm", False, False), ("peephole", False, False), ("cifg", False, False),
                          ("gru", False, False), ("lstm", True, True)])
def test_each_variant_learns_a_periodic_series(tmp_path, cell, bidirectional, attention):
    # Eight phase-shifted sines of period 8: naive is far off, a learned model is close.
    t = np.arange(120)
    frame = pd.concat([pd.DataFrame({"unique_id": f"s{k}", "y": 10 + np.sin(2 * np.pi * (t + k) / 8),
                                     "ds": pd.date_range("2020-01-01", periods=len(t), freq="D")})
                       for k in range(8)])
    data = tmp_path / "sines.csv"
    frame.to_csv(data, index=False)
    config = load_config(None, {"data.horizon": 4, "data.lookback": 16, "model.hidden_size": 16,
                                "model.layers": 1, "model.cell": cell, "model.bidirectional": bidirectional,
                                "model.attention": attention, "model.window_norm": "standard",
                                "train.batch_size": 32, "train.lr": 0.01, "train.epochs": 12,
                                "train.loss": "mae"})
    result = train(data, tmp_path / "run", config)
    validation = result.metrics["validation"]
    assert validation["naive"]["mae"] > 0.5
    assert validation["model"]["mae"] < 0.1, validation["model"]


def test_linear_skip_adds_a_linear_map_of_the_normalised_window(tmp_path):
    lookback, horizon = 9, 3
    torch.manual_seed(0)
    plain = Forecaster(load_config(None, {"model.window_norm": "mean"}).model, horizon, lookback).eval()
    torch.manual_seed(0)
    config = load_config(None, {"model.window_norm": "mean", "model.linear_skip": True}).model
    skip = Forecaster(config, horizon, lookback).eval()
    # Its own parameters only, created last: the rest of the model is initialised exactly as before.
    assert count_parameters(skip) - count_parameters(plain) == lookback * horizon + horizon
    inputs = torch.rand(4, 12, 2) + 0.5
    inputs[..., 1] = 1.0
    with torch.no_grad():
        torch.testing.assert_close(skip(inputs), plain(inputs))  # starts at zero: the plain model
        skip.skip.weight.normal_()
        skip.skip.bias.normal_()
        window = inputs[:, -lookback:, 0]
        level = window.abs().mean(dim=1, keepdim=True)       # window_norm mean's scale
        expected = plain(inputs) + skip.skip(window / level) * level
        torch.testing.assert_close(skip(inputs), expected)

    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *TINY, "--set", "train.epochs=2",
                     "--set", "model.linear_skip=true")
    assert result.exit_code == 0, result.stderr
    run = load_run(out)
    assert run.model.members[0].skip.weight.shape == (12, 36)
    assert float(run.model.members[0].skip.weight.detach().abs().sum()) > 0  # trained away from zero
    values = forecast(run, read_for_run(run, SALES))
    assert values.shape[1] == 12 and np.isfinite(values).all()
