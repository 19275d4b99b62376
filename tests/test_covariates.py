"""Covariates: past and future covariate columns, calendar features, the series embedding, the
--future file, and compatibility with runs made before covariates existed."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SALES, TINY, run_cli

from lstmcast.checkpoint import load_checkpoint, save_checkpoint
from lstmcast.config import ModelConfig, load_config
from lstmcast.covariates import calendar_features, calendar_names
from lstmcast.errors import LstmcastError
from lstmcast.evaluate import evaluate
from lstmcast.model import Forecaster
from lstmcast.predict import load_run, predict
from lstmcast.windows import SeriesBuffer

PREFIX = "lstmcast: error: "
HORIZON = 6
SMALL = ["--set", "model.hidden_size=16", "--set", "model.layers=1", "--set", "model.dropout=0",
         "--set", "train.batch_size=64", "--horizon", HORIZON, "--lookback", 12]


def promo_data(n_series: int = 20, length: int = 96, seed: int = 0) -> pd.DataFrame:
    """Monthly series: level + yearly sine + 5 x promo (a random 0/1 known in advance) + small
    noise, and temp, a past-only covariate that does not drive y."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2015-01-01", periods=length, freq="MS")
    frames = []
    for i in range(n_series):
        promo = rng.integers(0, 2, length).astype(float)
        t = np.arange(length)
        y = 10 + i % 5 + 2 * np.sin(2 * np.pi * t / 12 + i) + 5 * promo + 0.2 * rng.standard_normal(length)
        frames.append(pd.DataFrame({"unique_id": f"s{i:02d}", "ds": times, "y": y.round(4), "promo": promo,
                                    "temp": (20 + 5 * np.sin(2 * np.pi * t / 12) + rng.standard_normal(length))
                                    .round(3)}))
    return pd.concat(frames, ignore_index=True)


def future_rows(frame: pd.DataFrame, steps: int = HORIZON, seed: int = 1) -> pd.DataFrame:
    """promo for the next `steps` months of every series."""
    rng = np.random.default_rng(seed)
    parts = []
    for sid, rows in frame.groupby("unique_id", sort=False):
        times = pd.date_range(rows["ds"].max(), periods=steps + 1, freq="MS")[1:]
        parts.append(pd.DataFrame({"unique_id": sid, "ds": times, "promo": rng.integers(0, 2, steps).astype(float)}))
    return pd.concat(parts, ignore_index=True)


def one_line(result) -> str:
    """The single stderr line of a user error (exit 2), without the prefix."""
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), result.stderr
    return lines[0][len(PREFIX):]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """history.csv (the first 90 months), full.csv (96: the last 6 held out), future.csv."""
    folder = tmp_path_factory.mktemp("covariates")
    full = promo_data()
    history = full.groupby("unique_id", sort=False).head(90)
    history.to_csv(folder / "history.csv", index=False)
    full.to_csv(folder / "full.csv", index=False)
    future_rows(history).to_csv(folder / "future.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def cov_run(data):
    """Past covariate temp, future covariate promo, calendar (month), a series embedding of 4."""
    out = data / "run_cov"
    result = run_cli("train", data / "history.csv", "--out", out, *SMALL, "--set", "train.epochs=2",
                     "--past-covariates", "temp", "--future-covariates", "promo",
                     "--set", "model.series_embedding=4", "--quiet")
    assert result.exit_code == 0, result.stderr
    return out


# ---------------------------------------------------------------------------------------------
# Calendar features


def test_calendar_features_by_frequency_by_hand():
    def sincos(x, period):
        return [math.sin(2 * math.pi * x / period), math.cos(2 * math.pi * x / period)]

    # Hourly: hour of day, day of week. 2024-03-05 was a Tuesday (day 1).
    times = pd.DatetimeIndex(["2024-03-05 06:00", "2024-03-10 18:00"])
    assert calendar_names("h") == ("hour_sin", "hour_cos", "dayofweek_sin", "dayofweek_cos")
    np.testing.assert_allclose(calendar_features(times, "h"),
                               [sincos(6, 24) + sincos(1, 7), sincos(18, 24) + sincos(6, 7)], atol=1e-12)
    # 15 minutes: the hour carries its minutes as a fraction; minute of hour too.
    times = pd.DatetimeIndex(["2024-03-05 06:45"])
    assert calendar_names("15min")[:4] == ("hour_sin", "hour_cos", "minute_sin", "minute_cos")
    np.testing.assert_allclose(calendar_features(times, "15min"),
                               [sincos(6.75, 24) + sincos(45, 60) + sincos(1, 7)], atol=1e-12)
    # Daily and business daily: day of week, day of year (from 0).
    times = pd.DatetimeIndex(["2024-01-01", "2024-12-31"])   # Monday; day 366 of a leap year
    for freq in ("D", "B"):
        assert calendar_names(freq) == ("dayofweek_sin", "dayofweek_cos", "dayofyear_sin", "dayofyear_cos")
        np.testing.assert_allclose(calendar_features(times, freq),
                                   [sincos(0, 7) + sincos(0, 366), sincos(1, 7) + sincos(365, 366)], atol=1e-12)
    # Weekly: ISO week of year. 2024-01-07 is in week 1, 2024-06-30 in week 26.
    times = pd.DatetimeIndex(["2024-01-07", "2024-06-30"])
    assert calendar_names("W-SUN") == ("week_sin", "week_cos")
    np.testing.assert_allclose(calendar_features(times, "W-SUN"), [sincos(0, 53), sincos(25, 53)], atol=1e-12)
    # Monthly (start or end), quarterly.
    times = pd.DatetimeIndex(["2024-01-01", "2024-04-01", "2024-12-01"])
    for freq in ("MS", "ME"):
        assert calendar_names(freq) == ("month_sin", "month_cos")
        np.testing.assert_allclose(calendar_features(times, freq), [sincos(0, 12), sincos(3, 12), sincos(11, 12)],
                                   atol=1e-12)
    np.testing.assert_allclose(calendar_features(times, "QS-JAN"), [sincos(0, 4), sincos(1, 4), sincos(3, 4)],
                               atol=1e-12)
    # Yearly: none; calendar none: none.
    assert calendar_names("YS") == () and calendar_features(times, "YS").shape == (3, 0)
    assert calendar_names("MS", "none") == () and calendar_features(times, "MS", "none").shape == (3, 0)
    assert np.abs(calendar_features(pd.date_range("2024-01-01", periods=500, freq="h"), "h")).max() <= 1.0


def test_buffer_gathers_the_known_features_of_each_forecast_step():
    """Rows lookback .. lookback + horizon - 1 after a window's start, known columns only; the
    tail rows after the end hold the future features with observed 0."""
    values = [np.arange(5.0), 10 + np.arange(3.0)]
    extra = [np.stack([100 + np.arange(5.0), 200 + np.arange(5.0)], axis=1),
             np.stack([300 + np.arange(3.0), 400 + np.arange(3.0)], axis=1)]
    tail = [np.array([[0.0, 205], [0, 206]]), np.array([[0.0, 403], [0, 404]])]
    buffer = SeriesBuffer.build(values, 3, torch.device("cpu"), extra, tail, n_known=1, horizon=2,
                                codes=np.array([0, -1]))
    assert buffer.features.shape == (3 + 5 + 2 + 3 + 3 + 2, 4)
    starts = buffer.origin_starts(np.array([3, 5, 3]), np.array([0, 0, 1]))
    inputs, future, series = buffer.model_inputs(starts)
    assert inputs.shape == (3, 3, 4)
    assert inputs[0, :, 0].tolist() == [0, 1, 2] and inputs[0, :, 2].tolist() == [100, 101, 102]
    assert future[..., 0].tolist() == [[203, 204], [205, 206], [403, 404]]
    assert series.tolist() == [0, 0, -1]
    assert buffer.features[buffer.offsets[0] + 5, :2].tolist() == [0, 0]     # tail: not observed
    # Without covariates the buffer is exactly the two-feature one, and there is nothing to gather.
    plain = SeriesBuffer.build(values, 3, torch.device("cpu"))
    assert plain.features.shape == (14, 2) and plain.model_inputs(starts[:1])[1:] == (None, None)


# ---------------------------------------------------------------------------------------------
# The model with and without a future-known covariate


def test_future_covariate_beats_the_same_model_without_it(data, tmp_path):
    maes = {}
    for name, options in (("none", []), ("promo", ["--future-covariates", "promo"])):
        out = tmp_path / name
        result = run_cli("train", data / "history.csv", "--out", out, *SMALL, "--set", "train.epochs=12",
                         "--set", "train.lr=0.01", *options, "--quiet")
        assert result.exit_code == 0, result.stderr
        report = evaluate(data / "full.csv", out)
        maes[name] = report["metrics"]["model"]["mae"]
    print(f"held-out MAE: with promo {maes['promo']:.3f}, without {maes['none']:.3f}")
    assert maes["promo"] < 0.6 * maes["none"], maes


# ---------------------------------------------------------------------------------------------
# Train / predict / evaluate with covariates


def test_run_records_its_features(cov_run):
    payload = load_checkpoint(cov_run / "model.pt")
    assert payload["format_version"] == 4
    features = payload["features"]
    assert features["layout"] == ["value", "observed", "temp", "promo", "month_sin", "month_cos"]
    assert features["past"] == ["temp"] and features["future"] == ["promo"] and features["calendar"] == "auto"
    assert features["calendar_features"] == ["month_sin", "month_cos"]
    assert all(isinstance(x, float) for x in features["mean"] + features["std"]) and len(features["mean"]) == 2
    frame = pd.read_csv(cov_run.parent / "history.csv")
    first = frame.groupby("unique_id").head(90 - HORIZON)            # the training part (validation held out)
    np.testing.assert_allclose(features["mean"], first[["temp", "promo"]].mean().to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(features["std"], first[["temp", "promo"]].std(ddof=0).to_numpy(), rtol=1e-9)
    config = (cov_run / "config.yaml").read_text()
    assert "past_covariates:\n  - temp" in config and "series_embedding: 4" in config
    run = load_run(cov_run)
    member = run.model.members[0]
    assert member.encoder.input_size == 2 + 1 + 1 + 2 and member.n_known == 3
    assert member.embedding.weight.shape == (20, 4) and member.head is None
    metrics = json.loads((cov_run / "metrics.json").read_text())
    assert metrics["n_validated"] == 20


def test_predict_with_future_writes_forecasts(cov_run, data, tmp_path):
    out = tmp_path / "forecasts.csv"
    result = run_cli("predict", data / "history.csv", "--model", cov_run, "--future", data / "future.csv",
                     "--out", out)
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["unique_id", "ds", "forecast"] and len(frame) == 20 * HORIZON
    assert frame["ds"].iloc[0] == "2022-07-01" and np.isfinite(frame["forecast"]).all()
    api = predict(data / "history.csv", cov_run, future=data / "future.csv")
    np.testing.assert_allclose(api["forecast"].to_numpy(), frame["forecast"].to_numpy(), rtol=1e-6)

    # The forecast of each step follows that step's promo: flipping them changes the forecasts.
    flipped = pd.read_csv(data / "future.csv")
    flipped["promo"] = 1 - flipped["promo"]
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    other = predict(data / "history.csv", cov_run, future=tmp_path / "flipped.csv")
    assert not np.allclose(other["forecast"], frame["forecast"])
    # --horizon 2 needs only the first 2 steps of each series and gives the same first 2 forecasts.
    short = pd.read_csv(data / "future.csv").groupby("unique_id").head(2)
    short.to_csv(tmp_path / "short.csv", index=False)
    two = predict(data / "history.csv", cov_run, horizon=2, future=tmp_path / "short.csv")
    np.testing.assert_allclose(two["forecast"].to_numpy(),
                               frame.groupby("unique_id").head(2)["forecast"].to_numpy(), rtol=1e-5)


def test_past_covariates_change_the_forecast(cov_run, data, tmp_path):
    history = pd.read_csv(data / "history.csv")
    warmer = history.copy()
    warmer["temp"] = warmer["temp"] + 10.0
    warmer.to_csv(tmp_path / "warmer.csv", index=False)
    a = predict(data / "history.csv", cov_run, future=data / "future.csv")["forecast"].to_numpy()
    b = predict(tmp_path / "warmer.csv", cov_run, future=data / "future.csv")["forecast"].to_numpy()
    assert np.abs(a - b).max() > 1e-4


def test_evaluate_and_backtest_use_the_covariates_in_the_file(cov_run, data, tmp_path):
    report = evaluate(data / "full.csv", cov_run, windows=2)
    assert report["n_series"] == 20 and report["per_window"][1]["n_series"] == 20
    # The held-out steps' promotions are read from the file: flip them and only the model changes.
    full = pd.read_csv(data / "full.csv")
    flipped = full.copy()
    flipped["promo"] = 1 - flipped["promo"]
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    other = evaluate(tmp_path / "flipped.csv", cov_run, windows=2)
    assert other["metrics"]["naive"] == report["metrics"]["naive"]
    assert abs(other["metrics"]["model"]["mae"] - report["metrics"]["model"]["mae"]) > 1e-3
    result = run_cli("evaluate", data / "full.csv", "--model", cov_run, "--windows", "2")
    assert result.exit_code == 0, result.stderr
    assert "per window" in result.stdout


def test_plot_passes_the_future_through(cov_run, data, tmp_path):
    out = tmp_path / "plot.png"
    result = run_cli("plot", data / "history.csv", "--model", cov_run, "--future", data / "future.csv",
                     "--out", out, "--series", "s00,s01")
    assert result.exit_code == 0, result.stderr
    assert out.stat().st_size > 0
    missing = tmp_path / "missing.png"
    message = one_line(run_cli("plot", data / "history.csv", "--model", cov_run, "--out", missing))
    assert message.startswith("this run reads future covariates (promo); pass --future") and not missing.exists()


def test_unseen_series_get_the_mean_embedding(cov_run, data, tmp_path):
    history = pd.read_csv(data / "history.csv")
    new = history[history["unique_id"].isin(["s00", "s01"])].copy()
    new["unique_id"] = new["unique_id"].map({"s00": "new_a", "s01": "s01"})
    new.to_csv(tmp_path / "new.csv", index=False)
    future = pd.read_csv(data / "future.csv")
    future = future[future["unique_id"].isin(["s00", "s01"])].copy()
    future["unique_id"] = future["unique_id"].map({"s00": "new_a", "s01": "s01"})
    future.to_csv(tmp_path / "new_future.csv", index=False)
    out = tmp_path / "f.csv"
    result = run_cli("predict", tmp_path / "new.csv", "--model", cov_run, "--future", tmp_path / "new_future.csv",
                     "--out", out)
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(out)
    assert frame["unique_id"].unique().tolist() == ["new_a", "s01"] and np.isfinite(frame["forecast"]).all()
    # A seen series keeps its own forecast; the unseen one equals the forecast with the mean vector.
    known = predict(data / "history.csv", cov_run, future=data / "future.csv")
    np.testing.assert_allclose(frame["forecast"][HORIZON:].to_numpy(),
                               known[known["unique_id"] == "s01"]["forecast"].to_numpy(), rtol=1e-5)
    run = load_run(cov_run)
    member = run.model.members[0]
    torch.testing.assert_close(member.embed(torch.tensor([-1, 3]), 2)[0], member.embedding.weight.mean(dim=0))
    torch.testing.assert_close(member.embed(torch.tensor([-1, 3]), 2)[1], member.embedding.weight[3])


def test_wide_file_covariates_are_shared_by_every_series(tmp_path):
    times = pd.date_range("2020-01-01", periods=60, freq="D")
    rng = np.random.default_rng(0)
    promo = rng.integers(0, 2, 60).astype(float)
    wide = pd.DataFrame({"ds": times, "a": 5 + 3 * promo + rng.random(60), "b": 9 + 2 * promo + rng.random(60),
                         "promo": promo})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    out = tmp_path / "run"
    result = run_cli("train", tmp_path / "wide.csv", "--out", out, "--target", "a,b", "--future-covariates", "promo",
                     *TINY, "--horizon", 3, "--set", "train.epochs=1", "--quiet")
    assert result.exit_code == 0, result.stderr
    pd.DataFrame({"ds": pd.date_range("2020-03-01", periods=3, freq="D"), "promo": [1.0, 0, 1]}).to_csv(
        tmp_path / "future.csv", index=False)
    frame = predict(tmp_path / "wide.csv", out, future=tmp_path / "future.csv")
    assert frame["unique_id"].tolist() == ["a"] * 3 + ["b"] * 3 and np.isfinite(frame["forecast"]).all()
    assert load_run(out).features.calendar_names == ("dayofweek_sin", "dayofweek_cos", "dayofyear_sin",
                                                     "dayofyear_cos")


# ---------------------------------------------------------------------------------------------
# Bad inputs: one line, exit 2, nothing written


def test_missing_future_rows_name_the_series_and_timestamps(cov_run, data, tmp_path):
    future = pd.read_csv(data / "future.csv")
    gappy = future.drop(index=[3, 7, 8, 9, 10]).reset_index(drop=True)  # s00 step 4, s01 steps 2-5
    gappy.to_csv(tmp_path / "gappy.csv", index=False)
    out = tmp_path / "f.csv"
    message = one_line(run_cli("predict", data / "history.csv", "--model", cov_run, "--future",
                               tmp_path / "gappy.csv", "--out", out))
    assert message == (f"{tmp_path / 'gappy.csv'}: 5 of the 120 needed rows are missing (series 's00' at "
                       f"2022-10-01 00:00:00; series 's01' at 2022-08-01 00:00:00; series 's01' at "
                       f"2022-09-01 00:00:00 and 2 more); the file needs promo for each of the next 6 steps "
                       f"of every series")
    assert not out.exists()


def test_future_file_problems(cov_run, data, tmp_path):
    out = tmp_path / "f.csv"
    future = pd.read_csv(data / "future.csv")
    future.drop(columns="promo").to_csv(tmp_path / "nocol.csv", index=False)
    message = one_line(run_cli("predict", data / "history.csv", "--model", cov_run, "--future",
                               tmp_path / "nocol.csv", "--out", out))
    assert message == (f"{tmp_path / 'nocol.csv'}: column 'promo' not found (columns: unique_id, ds); the run was "
                       f"trained on that column, so the data needs it too")
    bad = future.astype({"promo": object})
    bad.loc[4, "promo"] = "yes"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    message = one_line(run_cli("predict", data / "history.csv", "--model", cov_run, "--future",
                               tmp_path / "bad.csv", "--out", out))
    assert message == (f"{tmp_path / 'bad.csv'} line 6, column 'promo': 'yes' is not a finite number; a covariate "
                       f"needs a finite number in every row")
    message = one_line(run_cli("predict", data / "history.csv", "--model", cov_run, "--out", out))
    assert message == ("this run reads future covariates (promo); pass --future FILE.csv with columns unique_id, "
                       "ds, promo for each of the next 6 steps of every series")
    assert not out.exists()
    plain = tmp_path / "plain"
    assert run_cli("train", SALES, "--out", plain, *TINY, "--set", "train.epochs=1", "--quiet").exit_code == 0
    message = one_line(run_cli("predict", SALES, "--model", plain, "--future", data / "future.csv", "--out", out))
    assert message == f"--future {data / 'future.csv'}: this run has no future covariates; drop --future"
    assert not out.exists()


def test_bad_covariate_columns_in_training_data(data, tmp_path):
    out = tmp_path / "run"
    history = data / "history.csv"
    message = one_line(run_cli("train", history, "--out", out, "--past-covariates", "humidity", *SMALL))
    assert message == (f"{history}: column 'humidity' not found (columns: unique_id, ds, y, promo, temp); pass "
                       f"--past-covariates / --future-covariates with one of them")
    message = one_line(run_cli("train", history, "--out", out, "--future-covariates", "y", *SMALL))
    assert message == f"{history}: covariate 'y' is the target column; a covariate must be another column"
    message = one_line(run_cli("train", history, "--out", out, "--past-covariates", "ds", *SMALL))
    assert message == f"{history}: covariate 'ds' is the time column; a covariate must be another column"
    message = one_line(run_cli("train", history, "--out", out, "--past-covariates", "promo",
                               "--future-covariates", "promo", *SMALL))
    assert message == ("config keys 'data.past_covariates' and 'data.future_covariates' both list 'promo'; a "
                       "covariate is either past-only or known in advance")
    frame = pd.read_csv(history).astype({"temp": object})
    frame.loc[10, "temp"] = "hot"
    frame.to_csv(tmp_path / "hot.csv", index=False)
    message = one_line(run_cli("train", tmp_path / "hot.csv", "--out", out, "--past-covariates", "temp", *SMALL))
    assert message == (f"{tmp_path / 'hot.csv'} line 12, column 'temp': 'hot' is not a finite number; a covariate "
                       f"needs a finite number in every row")
    frame.loc[10, "temp"] = None
    frame.to_csv(tmp_path / "empty.csv", index=False)
    message = one_line(run_cli("train", tmp_path / "empty.csv", "--out", out, "--past-covariates", "temp", *SMALL))
    assert message == (f"{tmp_path / 'empty.csv'} line 12, column 'temp': is empty; a covariate needs a finite "
                       f"number in every row")
    assert not out.exists()
    with pytest.raises(LstmcastError, match=re.escape("config key 'data.calendar' must be one of auto|none")):
        load_config(None, {"data.calendar": "yes"})
    with pytest.raises(LstmcastError, match="config key 'model.series_embedding' must be >= 0"):
        load_config(None, {"model.series_embedding": -1})


# ---------------------------------------------------------------------------------------------
# Compatibility with runs made before covariates

# Forecasts of the unmodified code (commit 9d1e69a) for: train SALES *TINY --set train.epochs=2
# (seed 0, CPU, fp32), predict SALES; series store_01 (12 steps) and the sum over all 144.
REFERENCE_STORE_01 = [239.119642, 235.575175, 235.780041, 240.648156, 245.006752, 244.610436, 242.485127,
                      248.523844, 242.90773, 237.646602, 241.036396, 242.432146]
REFERENCE_SUM = 186388.81803964634


def test_no_covariates_and_calendar_none_is_the_model_before_covariates(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *TINY, "--set", "train.epochs=2", "--set", "data.calendar=none",
                     "--quiet")
    assert result.exit_code == 0, result.stderr
    run = load_run(out)
    member = run.model.members[0]
    # Exactly the parameters of the old model: encoder over 2 features and the linear head.
    old = Forecaster(ModelConfig(hidden_size=8, layers=1), 12, 36)
    assert [(k, v.shape) for k, v in member.state_dict().items()] == [(k, v.shape) for k, v in old.state_dict().items()]
    frame = predict(SALES, out)
    np.testing.assert_allclose(frame["forecast"][:12].to_numpy(), REFERENCE_STORE_01, rtol=1e-5)
    np.testing.assert_allclose(frame["forecast"].sum(), REFERENCE_SUM, rtol=1e-6)


def test_old_checkpoint_without_covariate_keys_still_predicts(tmp_path):
    """A run saved before covariates: format 2, no data.calendar / covariate keys, no "features".
    It loads with calendar none (not today's default, auto) and forecasts as it did."""
    run_dir = tmp_path / "run"
    result = run_cli("train", SALES, "--out", run_dir, *TINY, "--set", "train.epochs=1", "--set", "data.calendar=none",
                     "--quiet")
    assert result.exit_code == 0, result.stderr
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    payload = load_checkpoint(old / "model.pt")
    for key in ("past_covariates", "future_covariates", "calendar"):
        del payload["config"]["data"][key]
    del payload["config"]["model"]["series_embedding"]
    del payload["features"]
    torch.save({**payload, "format_version": 2}, old / "model.pt")
    assert load_checkpoint(old / "model.pt")["format_version"] == 2
    run = load_run(old)
    assert run.config.data.calendar == "none" and run.features.n_extra == 0
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run_cli("predict", SALES, "--model", old, "--out", a).exit_code == 0
    assert run_cli("predict", SALES, "--model", run_dir, "--out", b).exit_code == 0
    assert a.read_text() == b.read_text()
    assert evaluate(SALES, old)["metrics"] == evaluate(SALES, run_dir)["metrics"]
    save_checkpoint(payload, old / "model.pt")   # re-saved today: format 3, still calendar none
    assert load_run(old).config.data.calendar == "none"


# ---------------------------------------------------------------------------------------------
# Covariates with the other model options, resume, and the data a run is given later


def test_quantiles_ensembles_and_cells_with_covariates(data, tmp_path):
    """Quantiles (conformal), two members with their own lookbacks, a gru with attention, window
    normalisation: members slice their lookback, never the future features of the forecast steps."""
    out = tmp_path / "run"
    result = run_cli("train", data / "history.csv", "--out", out, *SMALL, "--set", "train.epochs=2",
                     "--future-covariates", "promo", "--past-covariates", "temp", "--quantiles", "0.1,0.9",
                     "--set", "model.conformal=true", "--set", "train.ensemble=2",
                     "--set", "train.ensemble_lookbacks=[6,12]", "--set", "model.cell=gru",
                     "--set", "model.attention=true", "--set", "model.window_norm=standard",
                     "--set", "model.series_embedding=3", "--quiet")
    assert result.exit_code == 0, result.stderr
    run = load_run(out)
    assert [m.lookback for m in run.model.members] == [6, 12]
    frame = predict(data / "history.csv", out, future=data / "future.csv")
    assert list(frame.columns) == ["unique_id", "ds", "forecast", "q_0.1", "q_0.9"] and len(frame) == 120
    assert (frame["q_0.1"] <= frame["forecast"]).all() and (frame["forecast"] <= frame["q_0.9"]).all()
    flipped = pd.read_csv(data / "future.csv")
    flipped["promo"] = 1 - flipped["promo"]
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    assert not np.allclose(predict(data / "history.csv", out, future=tmp_path / "flipped.csv")["forecast"],
                           frame["forecast"])
    report = evaluate(data / "full.csv", out)
    assert set(report["intervals"]) == {"0.1-0.9"} and math.isfinite(report["metrics"]["model"]["mae"])


def test_resume_and_the_fingerprint_cover_the_covariates(data, tmp_path):
    out = tmp_path / "run"
    args = ("train", data / "history.csv", "--out", out, *SMALL, "--past-covariates", "temp", "--quiet")
    assert run_cli(*args, "--set", "train.epochs=1").exit_code == 0
    assert run_cli(*args, "--set", "train.epochs=2", "--resume").exit_code == 0
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1, 2]
    changed = pd.read_csv(data / "history.csv")
    changed.loc[5, "temp"] += 1.0                     # only a covariate differs
    changed.to_csv(tmp_path / "changed.csv", index=False)
    message = one_line(run_cli("train", tmp_path / "changed.csv", "--out", out, *SMALL, "--past-covariates", "temp",
                               "--set", "train.epochs=3", "--resume"))
    assert message == (f"--resume: {tmp_path / 'changed.csv'} differs from the data {out} was trained on; start a "
                       f"new run (--overwrite or another --out)")


def test_predict_data_without_a_trained_covariate_column(cov_run, data, tmp_path):
    pd.read_csv(data / "history.csv").drop(columns="temp").to_csv(tmp_path / "no_temp.csv", index=False)
    out = tmp_path / "f.csv"
    message = one_line(run_cli("predict", tmp_path / "no_temp.csv", "--model", cov_run, "--future",
                               data / "future.csv", "--out", out))
    assert message == (f"{tmp_path / 'no_temp.csv'}: column 'temp' not found (columns: unique_id, ds, y, promo); "
                       f"the run was trained on that column, so the data needs it too")
    assert not out.exists()
