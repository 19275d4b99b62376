"""Ensembles over lookbacks, per-series window limits and the MASE loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SALES, TINY, run_cli

from lstmcast.config import load_config
from lstmcast.errors import LstmcastError
from lstmcast.model import Ensemble, Forecaster
from lstmcast.predict import forecast, load_run, read_for_run
from lstmcast.train import MaseLoss, TrainStart, seasonal_scale, train
from lstmcast.windows import SeriesBuffer


def test_ensemble_lookbacks_config_parsing_and_checks(tmp_path):
    config = load_config(None, {"train.ensemble": 4, "train.ensemble_lookbacks": "6,9"})
    assert config.train.ensemble_lookbacks == [6, 9]
    assert [config.member_lookback(k) for k in range(1, 5)] == [6, 9, 6, 9]
    assert config.input_length == 9
    plain = load_config(None, {"data.horizon": 5})
    assert plain.member_lookback(1) == 15 and plain.input_length == 15
    with pytest.raises(LstmcastError, match="train.ensemble is 1; set train.ensemble to at least 2"):
        load_config(None, {"train.ensemble_lookbacks": [6, 9]})
    with pytest.raises(LstmcastError, match="must be a list of int"):
        load_config(None, {"train.ensemble": 2, "train.ensemble_lookbacks": ["six", 9]})
    with pytest.raises(LstmcastError, match="every item must be >= 1"):
        load_config(None, {"train.ensemble": 2, "train.ensemble_lookbacks": [0, 9]})

    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, "--set", "train.ensemble_lookbacks=[6,9]")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "lstmcast: error: train.ensemble_lookbacks lists 2 lookbacks but train.ensemble is 1; set "
        "train.ensemble to at least 2 (lookbacks are cycled over the members) or train.ensemble_lookbacks to null"]
    assert not out.exists()


def test_members_with_different_lookbacks(tmp_path):
    out = tmp_path / "run"
    # calendar none: the members below are called with bare (value, observed) inputs.
    result = run_cli("train", SALES, "--out", out, *TINY, "--set", "train.epochs=2", "--set", "data.calendar=none",
                     "--set", "train.ensemble=2", "--set", "train.ensemble_lookbacks=[6,20]")
    assert result.exit_code == 0, result.stderr
    assert "6 training windows" not in result.stderr
    run = load_run(out)
    assert [m.lookback for m in run.model.members] == [6, 20]
    series = read_for_run(run, SALES)
    values = forecast(run, series)
    assert values.shape == (len(series), 12) and np.isfinite(values).all()

    # Member 1 reads only the last 6 points: changing anything before them leaves it unchanged,
    # while member 2 (20 points) sees the change.
    inputs = torch.randn(3, 20, 2)
    inputs[..., 1] = 1.0
    changed = inputs.clone()
    changed[:, :14, 0] += 5.0
    short, long = run.model.members
    with torch.no_grad():
        torch.testing.assert_close(short(inputs), short(changed))
        assert not torch.allclose(long(inputs), long(changed))
        both = torch.stack([short(inputs), long(inputs)])
        torch.testing.assert_close(run.model(inputs), both.quantile(0.5, dim=0))

    forecasts = tmp_path / "f.csv"
    result = run_cli("predict", SALES, "--model", out, "--out", forecasts)
    assert result.exit_code == 0, result.stderr
    np.testing.assert_allclose(pd.read_csv(forecasts)["forecast"].to_numpy(), values.reshape(-1),
                               rtol=1e-6)


def test_ensemble_from_weights_rebuilds_member_lookbacks():
    config = load_config(None, {"model.hidden_size": 4, "data.horizon": 3, "train.ensemble": 3,
                                "train.ensemble_lookbacks": [4, 7]})
    members = [Forecaster(config.model, 3, lb).eval() for lb in (4, 7, 4)]
    rebuilt = Ensemble.from_weights(config, [m.state_dict() for m in members]).eval()
    assert [m.lookback for m in rebuilt.members] == [4, 7, 4]
    x = torch.randn(2, 7, 2)
    with torch.no_grad():
        for a, b in zip(members, rebuilt.members):
            torch.testing.assert_close(a(x), b(x))


def test_max_windows_per_series_keeps_the_latest_windows(tmp_path):
    # Two series of 10 and 4 points, lookback 3, horizon 2: 8 and 2 windows in all.
    series = [np.arange(1.0, 11.0), np.arange(101.0, 105.0)]
    buffer = SeriesBuffer.build(series, lookback=3, device=torch.device("cpu"))
    lengths = np.array([10, 4])
    every = buffer.training_starts(lengths, horizon=2)
    latest = buffer.training_starts(lengths, horizon=2, per_series=3)
    assert len(every) == 8 + 2 and len(latest) == 3 + 2
    _, targets = buffer.windows(latest, horizon=2)
    # The latest 3 windows of series 1 end on its last point; series 2 has only 2 windows.
    assert targets.tolist() == [[7, 8], [8, 9], [9, 10], [102, 103], [103, 104]]

    events = []
    config = load_config(None, {"model.hidden_size": 4, "model.layers": 1, "train.epochs": 1,
                                "train.max_windows_per_series": 5})
    train(SALES, tmp_path / "run", config, on_event=events.append)
    start = next(e for e in events if isinstance(e, TrainStart))
    frame = pd.read_csv(SALES)
    n_series = frame.iloc[:, 0].nunique()
    # Every sample series has far more than 5 windows: exactly 5 each.
    assert start.n_windows == 5 * n_series


def test_seasonal_scale_by_hand():
    # Window 1, season 2: |4 - 1| and |8 - 2| -> 4.5.
    # Window 2: its first two steps are padding, so no lag-2 pair is observed: lag 1, |6 - 3| = 3.
    values = torch.tensor([[1.0, 2.0, 4.0, 8.0], [0.0, 0.0, 3.0, 6.0]])
    observed = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    inputs = torch.stack([values, observed], dim=-1)
    torch.testing.assert_close(seasonal_scale(inputs, 2), torch.tensor([[4.5], [3.0]]))
    # A flat window falls back to 1% of its level.
    flat = torch.stack([torch.full((1, 4), 50.0), torch.ones(1, 4)], dim=-1)
    torch.testing.assert_close(seasonal_scale(flat, 2), torch.tensor([[0.5]]))


def test_mase_loss_is_mae_over_the_seasonal_scale():
    values = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    inputs = torch.stack([values, torch.ones(1, 4)], dim=-1)
    scale = torch.tensor([[2.0]])  # window-normalised units: errors and the scale both / 2
    prediction, target = torch.tensor([[5.0, 5.0]]), torch.tensor([[3.0, 6.0]])
    loss = MaseLoss(season=2)(prediction / scale, target / scale, inputs, scale)
    torch.testing.assert_close(loss, torch.tensor((2.0 + 1.0) / 2 / 4.5))


def test_mase_loss_of_an_all_zero_window_is_relative_to_its_targets():
    # Inputs all zero: no seasonal scale and no level. The error counts relative to the targets'
    # mean |value| (4 here), not divided by ~0, so one such window cannot swamp a batch.
    zeros = torch.stack([torch.zeros(2, 4), torch.ones(2, 4)], dim=-1)
    scale = torch.ones(2, 1)
    prediction, target = torch.tensor([[4.0, 4.0], [0.5, 0.0]]), torch.tensor([[3.0, 5.0], [0.0, 0.0]])
    loss = MaseLoss(season=2)(prediction, target, zeros, scale)
    # Window 1: mean error 1 over 4; window 2: all-zero targets fall back to 1, mean error 0.25.
    torch.testing.assert_close(loss, torch.tensor((1.0 / 4.0 + 0.25) / 2))
    # A window that does have a scale is unchanged by the fallback.
    values = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    inputs = torch.stack([values, torch.ones(1, 4)], dim=-1)
    loss = MaseLoss(season=2)(torch.tensor([[5.0]]), torch.tensor([[3.0]]), inputs, torch.ones(1, 1))
    torch.testing.assert_close(loss, torch.tensor(2.0 / 4.5))


def test_training_with_mase_loss(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *TINY, "--set", "train.epochs=3",
                     "--set", "train.loss=mase", "--set", "data.scaling=none",
                     "--set", "model.window_norm=mean")
    assert result.exit_code == 0, result.stderr
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 3 and np.isfinite(history["val_loss"]).all()
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_members_config_entries_parsing_and_checks(tmp_path):
    config = load_config(None, {"data.horizon": 4, "train.ensemble": 3, "train.members": [
        {"model.window_norm": "mean", "train.loss": "smape"},
        {"model": {"layers": 1, "hidden_size": 5}, "train.loss": "mase", "data.lookback": 8}]})
    first, second, third = (config.member(k) for k in (1, 2, 3))
    assert (first.model.window_norm, first.train.loss, first.data.resolved_lookback) == ("mean", "smape", 12)
    assert (second.model.layers, second.model.hidden_size, second.train.loss) == (1, 5, "mase")
    assert [config.member_lookback(k) for k in (1, 2, 3)] == [12, 8, 12]  # cycled
    assert third == first and config.input_length == 12
    # Each member's own config carries no ensemble lists; the run's keys stay the run's.
    assert second.train.members is None and second.data.horizon == 4 and second.train.ensemble == 3
    assert load_config(None, {}).member(1) == load_config(None, {})

    checks = [
        ({"train.members": [{"data.horizon": 3}]},
         "train.members entry 1: 'data.horizon' is not a key a member may set"),
        ({"train.ensemble": 2, "train.members": [{}, {"train.loss": "smapee"}]},
         "train.members entry 2: config key 'train.loss' must be one of mse|mae|huber|smape|mase"),
        ({"train.members": [{"train.lr": -1}]}, "train.members entry 1: config key 'train.lr' must be >= 0.0"),
        ({"train.members": [3]}, "'train.members' must be a list of mappings"),
        ({"train.members": [{}, {}]}, "train.members lists 2 entries but train.ensemble is 1"),
        ({"train.ensemble": 2, "train.ensemble_lookbacks": [4, 6], "train.members": [{"data.lookback": 5}]},
         "sets data.lookback and train.ensemble_lookbacks is set too"),
    ]
    for updates, message in checks:
        with pytest.raises(LstmcastError, match=message):
            load_config(None, updates)

    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, "--set", "train.ensemble=2",
                     "--set", "train.members=[{}, {model.layers: 0}]")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "lstmcast: error: train.members entry 2: config key 'model.layers' must be >= 1, got 0"]
    assert not out.exists()


def test_members_train_with_their_own_keys(tmp_path):
    """A two-member run whose members differ in architecture, normalisation, loss, lookback and
    epochs: member 2 is exactly the single-member run of its own config with seed 1."""
    base = ["--set", "data.calendar=none", "--set", "data.scaling=none", "--set", "train.batch_size=128",
            "--set", "model.hidden_size=8", "--set", "train.epochs=2"]
    mixed = tmp_path / "mixed"
    result = run_cli("train", SALES, "--out", mixed, *base, "--set", "train.ensemble=2", "--set",
                     "train.members=[{model.layers: 1, model.window_norm: mean, train.loss: smape, "
                     "train.epochs: 1, model.linear_skip: true}, "
                     "{model.window_norm: standard, train.loss: mase, data.lookback: 20}]")
    assert result.exit_code == 0, result.stderr
    # The progress log names what each member does differently from the run's own keys.
    assert ("member 1/2 (model.layers=1, model.window_norm=mean, model.linear_skip=true, train.epochs=1, "
            "train.loss=smape): ") in result.stderr
    assert "member 2/2 (data.lookback=20, model.window_norm=standard, train.loss=mase): " in result.stderr
    history = pd.read_csv(mixed / "history.csv")
    assert history.groupby("member").size().to_dict() == {1: 1, 2: 2}  # member 1: epochs 1

    run = load_run(mixed)
    one, two = run.model.members
    assert (one.window_norm, one.lookback, one.encoder.num_layers) == ("mean", 36, 1)
    assert one.skip is not None and two.skip is None
    assert (two.window_norm, two.lookback, two.encoder.num_layers) == ("standard", 20, 2)

    single = tmp_path / "single"
    result = run_cli("train", SALES, "--out", single, *base, "--set", "train.seed=1",
                     "--set", "model.window_norm=standard", "--set", "train.loss=mase",
                     "--set", "data.lookback=20")
    assert result.exit_code == 0, result.stderr
    alone = load_run(single).model.members[0]
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(two.state_dict()[name], value, rtol=0, atol=0)
    np.testing.assert_array_equal(pd.read_csv(single / "history.csv")[["train_loss", "val_loss"]],
                                  history[history.member == 2][["train_loss", "val_loss"]])

    forecasts = tmp_path / "f.csv"
    result = run_cli("predict", SALES, "--model", mixed, "--out", forecasts)
    assert result.exit_code == 0, result.stderr
    series = read_for_run(run, SALES)
    np.testing.assert_allclose(pd.read_csv(forecasts)["forecast"].to_numpy(),
                               forecast(run, series).reshape(-1), rtol=1e-6)
