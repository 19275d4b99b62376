"""model.classical: Theta and damped exponential smoothing (lstmcast/classical.py), which of them
join the neural median (selection.choose_classical), and predict / evaluate / metrics.json
combining exactly as chosen."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SALES, cli, error_line

from lstmcast import classical
from lstmcast.auto import resolve
from lstmcast.config import load_config
from lstmcast.data import read_series
from lstmcast.predict import forecast, forecast_at, load_run, read_for_run
from lstmcast.selection import choose_classical

pytestmark = pytest.mark.usefixtures("one_thread")

PATTERN = np.array([0.8, 0.9, 1.0, 1.1, 1.3, 1.2, 1.0, 0.9, 0.85, 0.95, 1.05, 0.95])


def test_a_constant_series_is_forecast_as_itself():
    x = [np.full(40, 7.5)]
    for method in classical.METHODS:
        assert np.allclose(classical.forecasts([method], x, 6, 12, 120)[0], 7.5, atol=1e-9)


def test_theta_is_ses_plus_half_the_trend():
    # y = 10 + 2t, no noise, no season: SES follows it with alpha at the grid's top (0.995), and
    # Theta adds half the slope per step: forecast k (1-based) ~ y_n + (k + 0.005) x slope / 2.
    n, h = 60, 6
    y = 10 + 2.0 * np.arange(n)
    got = classical.forecasts(["theta"], [y], h, 1, 120)[0][0]
    alpha = classical.THETA_ALPHAS[-1]
    level = y[-1] - 2.0 * (1 - alpha) / alpha          # SES's steady lag behind a line
    expected = level + 1.0 * (np.arange(h) + (1 - (1 - alpha) ** n) / alpha)
    assert np.allclose(got, expected, atol=1e-6)
    # Damped ES with phi = 1 on the grid extrapolates the line itself.
    ets = classical.forecasts(["ets"], [y], h, 1, 120)[0][0]
    assert np.allclose(ets, y[-1] + 2.0 * np.arange(1, h + 1), atol=1e-6)


@pytest.mark.parametrize("n", [48, 53, 100])
def test_the_season_is_put_back_in_phase(n):
    # A multiplicative season on a flat level, whatever the length's remainder modulo 12: the
    # forecasts continue the pattern where the series stops.
    t = np.arange(n)
    x = 100.0 * PATTERN[t % 12]
    future = 100.0 * PATTERN[np.arange(n, n + 18) % 12]
    for method in classical.METHODS:
        got = classical.forecasts([method], [x], 18, 12, 120)[0][0]
        assert np.allclose(got, future, rtol=1e-6), method


def test_a_series_forecast_does_not_depend_on_its_neighbours():
    # Bit for bit: alone, or in an array with series of other lengths (NaN-padded to the same width).
    rng = np.random.default_rng(0)
    series = [50 + rng.normal(0, 3, n).cumsum() + 10 * PATTERN[np.arange(n) % 12] for n in (30, 130, 61, 2, 1)]
    series = [np.abs(s) + 1 for s in series]
    together = classical.forecasts(classical.METHODS, series, 12, 12, 120)
    for i, s in enumerate(series):
        alone = classical.forecasts(classical.METHODS, [s], 12, 12, 120)
        for a, b in zip(alone, together):
            assert np.array_equal(a[0], b[i])
    assert all(np.isfinite(f).all() for f in together)    # one or two points: still a forecast


def test_combine_is_the_median_and_leaves_out_what_is_not_finite():
    neural = np.array([[1.0, 2.0]])
    theta = np.array([[3.0, np.inf]])
    ets = np.array([[2.0, 4.0]])
    assert np.array_equal(classical.combine(neural, [theta, ets]), [[2.0, 3.0]])
    assert np.array_equal(classical.combine(neural, [theta]), [[2.0, 2.0]])   # of two: the mean
    assert classical.combine(neural, []) is neural


def test_choose_classical_keeps_only_what_helps():
    actual = np.zeros((4, 3))
    scale = np.ones(4)
    neural = np.full((4, 3), 1.0)
    good, bad = np.full((4, 3), -1.0), np.full((4, 3), 9.0)
    chosen = choose_classical(neural, {"theta": good, "ets": bad}, actual, scale)
    assert chosen.keep == ("theta",)                       # the mean of 1 and -1 is exact
    assert chosen.scores[()] == 1.0 and chosen.scores[("theta",)] == 0.0
    assert chosen.scores[("theta", "ets")] == 1.0          # the median of 1, -1, 9
    assert choose_classical(neural, {"theta": bad, "ets": bad}, actual, scale).keep == ()
    report = chosen.report()
    assert report["kept"] == ["theta"] and report["neural_mase"] == 1.0 and report["mase"]["theta+ets"] == 1.0


SMALL = ["--set", "model.hidden_size=8", "--set", "model.layers=1", "--set", "train.epochs=2",
         "--set", "train.ensemble=2", "--set", "train.members=null", "--set", "train.ensemble_lookbacks=null",
         "--set", "data.lookback=24", "--horizon", "6", "--set", "data.calendar=none"]


@pytest.fixture(scope="module")
def combined_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("classical") / "run"
    result = cli("train", SALES, "--out", run, *SMALL, "--set", "model.classical=theta,ets",
                 "--set", "train.select=true")
    assert result.exit_code == 0, result.stderr
    return run, result


def test_the_run_records_what_it_combines(combined_run):
    run, result = combined_run
    metrics = json.loads((run / "metrics.json").read_text())
    chosen = metrics["classical"]
    assert set(chosen["mase"]) == {"neural", "theta", "ets", "theta+ets"}
    kept = tuple(chosen["kept"])
    assert chosen["kept_mase"] == chosen["mase"]["+".join(kept) or "neural"]
    assert chosen["kept_mase"] <= min(chosen["mase"].values()) * 1.005
    # metrics.json's validation score is that of the combination it keeps.
    assert metrics["validation"]["model"]["mase"] == pytest.approx(chosen["kept_mase"], abs=1e-6)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["classical"] == (list(kept) or None) and saved["train"]["select"] is False
    assert "classical forecasts:" in result.stderr


def test_training_computes_the_classical_forecasts_once(tmp_path, monkeypatch):
    # The choice and metrics.json's validation scores use the same forecasts: computed once.
    calls = []
    real = classical.forecasts

    def counted(methods, *args):
        calls.append(tuple(methods))
        return real(methods, *args)

    monkeypatch.setattr(classical, "forecasts", counted)
    result = cli("train", SALES, "--out", tmp_path / "run", *SMALL, "--set", "model.classical=theta,ets",
                 "--set", "train.select=true")
    assert result.exit_code == 0, result.stderr
    assert calls == [("theta", "ets")]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["validation"]["model"]["mase"] == pytest.approx(metrics["classical"]["kept_mase"], abs=1e-6)


def test_predict_is_the_median_with_the_kept_classical_forecasts(combined_run, tmp_path):
    run_dir, _ = combined_run
    out = tmp_path / "f.csv"
    assert cli("predict", SALES, "--model", run_dir, "--out", out).exit_code == 0
    got = pd.read_csv(out)["forecast"].to_numpy().reshape(-1, 6)
    run = load_run(run_dir)
    kept = run.config.model.classical or []
    assert kept   # an 8-unit network trained 2 epochs: the classical forecasts help it
    series = read_for_run(run, SALES)
    run_neural = load_run(run_dir)
    run_neural.config = load_config(None, {"model.classical": None}, base=run.config)
    neural = forecast(run_neural, series)
    points = classical.history_points(run.config.input_length, 12)
    expected = classical.combine(neural, classical.forecasts(kept, series.values, 6, 12, points))
    assert np.allclose(got, expected, rtol=1e-12)
    # evaluate's forecasts from cut points combine the same way: at the series' end, predict's.
    at_end = forecast_at(run, series, *run.scaler.for_series(series.ids, series.values), series.lengths())
    assert np.allclose(at_end[:, :6], expected, rtol=1e-12)
    # The same bytes whatever the chunk.
    one = tmp_path / "one.csv"
    assert cli("predict", SALES, "--model", run_dir, "--out", one, "--chunk-series", "1").exit_code == 0
    assert one.read_bytes() == out.read_bytes()


def test_classical_refuses_quantiles_and_unknown_methods(tmp_path):
    result = cli("train", SALES, "--out", tmp_path / "q", *SMALL, "--set", "model.classical=theta",
                 "--quantiles", "0.1,0.9")
    assert result.exit_code == 2
    assert "model.classical" in error_line(result, "model.quantiles")
    result = cli("train", SALES, "--out", tmp_path / "u", *SMALL, "--set", "model.classical=arima")
    assert result.exit_code == 2
    assert "theta|ets" in error_line(result, "model.classical")
    assert not (tmp_path / "q").exists() and not (tmp_path / "u").exists()


def test_evaluate_scores_the_combination(combined_run, tmp_path):
    # evaluate's held-out window = predict on the file cut before it.
    run_dir, _ = combined_run
    data = pd.read_csv(SALES)
    cut = data.groupby("unique_id", sort=False).head(-6)
    actual = data.groupby("unique_id", sort=False).tail(6)["y"].to_numpy().reshape(-1, 6)
    cut.to_csv(tmp_path / "cut.csv", index=False)
    assert cli("predict", tmp_path / "cut.csv", "--model", run_dir, "--out", tmp_path / "f.csv").exit_code == 0
    predicted = pd.read_csv(tmp_path / "f.csv")["forecast"].to_numpy().reshape(-1, 6)
    assert cli("evaluate", SALES, "--model", run_dir, "--out", tmp_path / "m.json").exit_code == 0
    scored = json.loads((tmp_path / "m.json").read_text())["metrics"]["model"]
    assert scored["mae"] == pytest.approx(np.abs(predicted - actual).mean(), rel=1e-9)


def test_the_recipe_offers_classical_forecasts_unless_select_is_off():
    series = read_series(SALES)

    def chosen(updates: dict) -> dict:
        config, choices = resolve(load_config(None, updates), series)
        return {"classical": config.model.classical, "select": config.train.select,
                "picked": {c.key for c in choices}}

    assert chosen({}) == {"classical": ["theta", "ets"], "select": True,
                          "picked": chosen({})["picked"] | {"model.classical", "train.select"}}
    explicit = chosen({"train.select": True})          # the user's own true keeps the offer
    assert explicit["classical"] == ["theta", "ets"] and "train.select" not in explicit["picked"]
    assert chosen({"train.select": False})["classical"] is None
    assert chosen({"model.quantiles": [0.1, 0.9]})["classical"] is None
