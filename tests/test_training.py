"""Resume, determinism, config, windows and the model's shape contracts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, SALES, TINY, run_cli

from lstmcast.config import Config, load_config, parse_set
from lstmcast.errors import LstmcastError
from lstmcast.model import Forecaster
from lstmcast.train import Step, train
from lstmcast.windows import SeriesBuffer


def small_config(**train_keys) -> Config:
    overrides = {"model.hidden_size": 8, "model.layers": 2, "train.batch_size": 128,
                 "train.epochs": 4, "train.recipe": "none", **{f"train.{k}": v for k, v in train_keys.items()}}
    return load_config(None, overrides)


def weights(path, member: int = 0) -> dict:
    """model.pt: a member's best weights; last.pt: the weights of the member in training."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["models"][member] if "models" in payload else payload["model"]


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    config = small_config()
    full = train(SALES, tmp_path / "full", config)

    def kill_mid_epoch_3(event):
        if isinstance(event, Step) and event.epoch == 3 and event.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(SALES, tmp_path / "cut", config, on_event=kill_mid_epoch_3)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    # Resume through the CLI, as a user would after a crash: no options needed.
    result = run_cli("train", SALES, "--out", tmp_path / "cut", "--resume")
    assert result.exit_code == 0, result.stderr
    assert "resuming at epoch 3" in result.stderr
    assert_same_weights(weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "cut" / "last.pt"),
                        atol=1e-6)
    assert_same_weights(weights(tmp_path / "full" / "model.pt"), weights(tmp_path / "cut" / "model.pt"),
                        atol=1e-6)
    a, b = pd.read_csv(tmp_path / "full" / "history.csv"), pd.read_csv(tmp_path / "cut" / "history.csv")
    assert a["epoch"].tolist() == b["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=1e-6)
    assert full.epochs_run == 4


def test_resume_may_extend_epochs_but_not_change_the_model(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", SALES, "--out", run, "--set", "train.epochs=1", *TINY).exit_code == 0
    more = run_cli("train", SALES, "--out", run, "--resume", "--set", "train.epochs=2")
    assert more.exit_code == 0, more.stderr
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2]
    before = (run / "model.pt").read_bytes()
    changed = run_cli("train", SALES, "--out", run, "--resume", "--set", "model.hidden_size=16")
    assert changed.exit_code == 2
    assert "'model.hidden_size' was 8" in changed.stderr and "now 16" in changed.stderr
    assert (run / "model.pt").read_bytes() == before


def test_same_seed_same_checkpoint_and_forecasts(tmp_path):
    for name in ("a", "b"):
        args = ("train", SALES, "--out", tmp_path / name, "--seed", 7, "--set", "train.epochs=2", *TINY)
        assert run_cli(*args).exit_code == 0
        assert run_cli("predict", SALES, "--model", tmp_path / name,
                       "--out", tmp_path / f"{name}.csv").exit_code == 0
    assert_same_weights(weights(tmp_path / "a" / "model.pt"), weights(tmp_path / "b" / "model.pt"))
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert run_cli("train", SALES, "--out", tmp_path / "c", "--seed", 8, "--set", "train.epochs=2",
                   *TINY).exit_code == 0
    first = weights(tmp_path / "a" / "model.pt")["encoder.weight_hh_l0"]
    assert not torch.equal(first, weights(tmp_path / "c" / "model.pt")["encoder.weight_hh_l0"])


def test_overwrite_replaces_a_run_only_when_done(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", SALES, "--out", run, "--set", "train.epochs=1", *TINY).exit_code == 0
    again = run_cli("train", SALES, "--out", run, "--overwrite", "--set", "train.epochs=2", *TINY)
    assert again.exit_code == 0, again.stderr
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial or old copies left


def test_default_yaml_lists_every_key_with_its_default():
    import yaml
    shipped = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert shipped == Config().to_dict()
    for name in ("monthly.yaml", "hourly.yaml"):
        load_config(ROOT / "configs" / name)  # every shipped example is valid


def test_config_layers_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  layers: 3\ntrain:\n  lr: 0.01\n")
    config = load_config(path, parse_set(["train.lr=1e-4", "data.target=a,b", "data.lookback=null"]))
    assert config.model.layers == 3 and config.train.lr == 1e-4
    assert config.data.target == ["a", "b"] and config.data.lookback is None
    assert config.data.resolved_lookback == 36
    with pytest.raises(LstmcastError, match="model.layers' must be int"):
        load_config(None, {"model.layers": "two"})
    with pytest.raises(LstmcastError, match="must be >= 1"):
        load_config(None, {"data.horizon": 0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.layers = 4


def test_windows_are_index_views_of_the_series():
    # Two series, lengths 7 and 3, lookback 4, horizon 2: values are their positions.
    buffer = SeriesBuffer.build([np.arange(7.0), 10 + np.arange(3.0)], 4, torch.device("cpu"))
    assert buffer.offsets.tolist() == [4, 15]
    starts = buffer.training_starts(np.array([5, 3]), 2)
    # Series 0: training part 5 points, targets start at positions 1..3; series 1: position 1.
    assert len(starts) == 3 + 1
    inputs, targets = buffer.windows(starts, 2)
    assert inputs.shape == (4, 4, 2) and targets.shape == (4, 2)
    assert targets.tolist() == [[1, 2], [2, 3], [3, 4], [11, 12]]
    # The first window sees 3 padding steps (observed 0) and the series' first value.
    assert inputs[0, :, 0].tolist() == [0, 0, 0, 0] and inputs[0, :, 1].tolist() == [0, 0, 0, 1]
    assert inputs[2, :, 0].tolist() == [0, 0, 1, 2] and inputs[2, :, 1].tolist() == [0, 1, 1, 1]
    # No training target reaches the held-out part (last 2 points of the 7 and 3).
    assert targets.max().item() == 12 and 5 not in targets[:3].flatten().tolist()
    last = buffer.inputs(buffer.forecast_starts())
    assert last[0, :, 0].tolist() == [3, 4, 5, 6] and last[1, :, 0].tolist() == [0, 10, 11, 12]
    val_inputs, val_targets = buffer.windows(buffer.target_starts(2), 2)
    assert val_targets.tolist() == [[5, 6], [11, 12]]


def test_model_shapes_and_forget_bias():
    config = load_config(None, {"model.hidden_size": 5, "model.layers": 3, "train.recipe": "none"})
    model = Forecaster(config.model, horizon=7, lookback=21)
    assert model(torch.randn(4, 11, 2)).shape == (4, 7)
    for layer in range(3):
        b_ih = getattr(model.encoder, f"bias_ih_l{layer}")
        b_hh = getattr(model.encoder, f"bias_hh_l{layer}")
        total = (b_ih + b_hh).detach()
        assert torch.all(total[5:10] == 1.0)          # forget gate: torch orders i, f, g, o
        assert not torch.all(total[:5] == 1.0)


def test_training_reduces_validation_loss(tmp_path):
    # calendar none: with the month features this 8-unit model's validation loss first rises
    # over these 6 short epochs before it falls; the training loop is what is tested here.
    config = dataclasses.replace(small_config(epochs=6), data=dataclasses.replace(Config().data, calendar="none"))
    result = train(SALES, tmp_path / "run", config)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]
    assert result.best_val_loss == pytest.approx(history["val_loss"].min(), rel=1e-6)
    assert result.best_epoch == int(history["val_loss"].idxmin()) + 1


def test_short_series_train_unvalidated_and_get_forecasts(tmp_path):
    # horizon 12: 'young' has 20 points (< 2 x 12 + 1): it trains on all 20, is not validated,
    # and still gets a forecast.
    data = pd.read_csv(SALES)
    young = data[data["unique_id"] == "store_05"].tail(20).assign(unique_id="young")
    path = tmp_path / "with_young.csv"
    pd.concat([data, young]).to_csv(path, index=False)
    result = train(path, tmp_path / "run", small_config(epochs=1))
    assert result.metrics["n_series"] == 13 and result.metrics["n_validated"] == 12
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    young_index = payload["scaler"]["ids"].index("young")
    # Its scaler saw all 20 points (none held out).
    assert payload["scaler"]["loc"][young_index] == pytest.approx(young["y"].mean())
    out = tmp_path / "f.csv"
    assert run_cli("predict", path, "--model", tmp_path / "run", "--out", out).exit_code == 0
    assert (pd.read_csv(out)["unique_id"] == "young").sum() == 12


def test_ensemble_members_and_median(tmp_path):
    config = small_config(epochs=2, ensemble=3)
    train(SALES, tmp_path / "run", config)
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert len(payload["models"]) == 3
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["member"].tolist() == [1, 1, 2, 2, 3, 3]
    # Members differ (seeds 0, 1, 2) and the forecast is their element-wise median.
    from lstmcast.predict import forecast, load_run, read_for_run
    run = load_run(tmp_path / "run")
    series = read_for_run(run, SALES)
    together = forecast(run, series)
    apart = []
    for member in run.model.members:
        run.model.members = torch.nn.ModuleList([member])
        apart.append(forecast(run, series))
    apart = np.stack(apart)
    assert not np.allclose(apart[0], apart[1])
    np.testing.assert_allclose(together, np.median(apart, axis=0), rtol=1e-5, atol=1e-4)


def test_ensemble_resume_inside_the_second_member(tmp_path):
    config = small_config(epochs=2, ensemble=2)
    train(SALES, tmp_path / "full", config)

    def kill(event):
        if isinstance(event, Step) and event.member == 2 and event.epoch == 2 and event.step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(SALES, tmp_path / "cut", config, on_event=kill)
    train(SALES, tmp_path / "cut", resume=True)  # no config: the run's own (config.yaml)
    for member in (0, 1):
        assert_same_weights(weights(tmp_path / "full" / "model.pt", member),
                            weights(tmp_path / "cut" / "model.pt", member), atol=1e-6)
    a, b = pd.read_csv(tmp_path / "full" / "history.csv"), pd.read_csv(tmp_path / "cut" / "history.csv")
    assert a["member"].tolist() == b["member"].tolist() == [1, 1, 2, 2]


def test_refit_trains_on_the_validation_part_too(tmp_path):
    plain = train(SALES, tmp_path / "plain", small_config(epochs=2))
    refit = train(SALES, tmp_path / "refit", small_config(epochs=2, refit_epochs=1))
    history = pd.read_csv(tmp_path / "refit" / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["val_loss"].iloc[:2].notna().all() and np.isnan(history["val_loss"].iloc[2])
    # The same two epochs first (same seed), then one more over every window: other weights.
    assert not torch.equal(weights(tmp_path / "plain" / "model.pt")["encoder.weight_hh_l0"],
                           weights(tmp_path / "refit" / "model.pt")["encoder.weight_hh_l0"])
    # metrics.json stays honest: it scores the weights chosen before the refit saw the data.
    assert refit.metrics["refit_epochs"] == 1
    assert refit.metrics["validation"] == plain.metrics["validation"]


@pytest.mark.parametrize("window_norm", ["none", "standard", "mean"])
def test_head_corrects_the_naive_forecast(window_norm):
    config = load_config(None, {"model.hidden_size": 6, "model.window_norm": window_norm, "train.recipe": "none"})
    model = Forecaster(config.model, horizon=4, lookback=12).eval()
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    values = torch.tensor([[0.0, 0.0, 3.0, 5.0, 4.0], [1.0, 2.0, 8.0, 2.0, 7.0]])
    observed = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0], [1.0] * 5])
    forecast = model(torch.stack([values, observed], dim=-1))
    # With no correction from the head, every step is the last observed value, in input units.
    torch.testing.assert_close(forecast, torch.tensor([[4.0] * 4, [7.0] * 4]), rtol=1e-5, atol=1e-5)


def test_window_stats_ignore_padding():
    from lstmcast.model import window_stats
    inputs = torch.stack([torch.tensor([[9.0, 2.0, 4.0]]), torch.tensor([[0.0, 1.0, 1.0]])], dim=-1)
    loc, scale = window_stats(inputs, "standard")
    assert loc.item() == pytest.approx(3.0) and scale.item() == pytest.approx(1.0 + 3e-3)
    loc, scale = window_stats(inputs, "mean")
    assert loc.item() == 0.0 and scale.item() == pytest.approx(3.0)
