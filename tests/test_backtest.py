"""Rolling-origin backtests: `lstmcast evaluate --windows N [--step S]` on the monthly sample.

The sample has 11 stores of 96 months and store_12 with 36; the run's horizon is 12.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SALES, run_cli

from lstmcast.data import SeriesSet
from lstmcast.evaluate import backtest, evaluate
from lstmcast.metrics import season_length
from lstmcast.predict import forecast, load_run, read_for_run

H = 12
FORECASTERS = ("model", "naive", "seasonal_naive")


def run_evaluate(sales_run, tmp_path, *options, data=SALES) -> dict:
    out = tmp_path / "metrics.json"
    result = run_cli("evaluate", data, "--model", sales_run, "--out", out, *options)
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    report["stdout"] = result.stdout
    return report


def assert_metrics_close(a: dict, b: dict, tol: float = 1e-9) -> None:
    assert set(a) == set(b) == set(FORECASTERS)
    for who in FORECASTERS:
        assert set(a[who]) == set(b[who]) == {"mae", "rmse", "smape", "mase"}
        for name in a[who]:
            assert abs(a[who][name] - b[who][name]) <= tol * max(1.0, abs(b[who][name])), (who, name)


def truncated(series: SeriesSet, keep: list[int], origins: list[int]) -> SeriesSet:
    """Series `keep[j]` cut just before its point `origins[j]`: the data as it was at that origin."""
    return SeriesSet(series.columns, series.freq, [series.ids[i] for i in keep],
                     [series.starts[i] for i in keep], [series.values[i][:o] for i, o in zip(keep, origins)])


def test_one_window_is_the_plain_evaluate(sales_run, tmp_path):
    plain = run_evaluate(sales_run, tmp_path)
    one = run_evaluate(sales_run, tmp_path, "--windows", 1)
    assert one["metrics"] == plain["metrics"]                       # bit for bit
    assert one["windows"] == 1 and one["step"] == H
    assert one["per_window"] == [{"window": 1, "steps_before_end": 0, "n_series": 12,
                                  "metrics": plain["metrics"], "in_sample": plain["in_sample"]}]
    assert "per window" not in one["stdout"] and "12 series, last 12 scored" in one["stdout"]


def test_three_windows(sales_run, tmp_path):
    plain = run_evaluate(sales_run, tmp_path)
    report = run_evaluate(sales_run, tmp_path, "--windows", 3)
    windows = report["per_window"]
    assert [w["window"] for w in windows] == [1, 2, 3]
    assert [w["steps_before_end"] for w in windows] == [2 * H, H, 0]
    # store_12 (36 points) has 36 - 12 - 24 = 0 points before the oldest origin: not scored there.
    assert [w["n_series"] for w in windows] == [11, 12, 12]
    assert report["n_series"] == 12 and report["windows"] == 3 and report["step"] == H
    assert_metrics_close(windows[-1]["metrics"], plain["metrics"])

    # Overall = every scored (series, window) pair: each pair has H points, so MAE, sMAPE and
    # squared errors average over windows weighted by their series count.
    n = np.array([w["n_series"] for w in windows], dtype=float)
    for who in FORECASTERS:
        per = {name: np.array([w["metrics"][who][name] for w in windows]) for name in ("mae", "rmse", "smape")}
        overall = report["metrics"][who]
        assert np.isclose(overall["mae"], np.sum(n * per["mae"]) / n.sum(), rtol=1e-12)
        assert np.isclose(overall["smape"], np.sum(n * per["smape"]) / n.sum(), rtol=1e-12)
        assert np.isclose(overall["rmse"], np.sqrt(np.sum(n * per["rmse"] ** 2) / n.sum()), rtol=1e-12)

    # The same numbers by hand from the forecasts of the three windows.
    run = load_run(sales_run)
    series = read_for_run(run, SALES)
    result = backtest(run, series, windows=3, season=12)
    assert result.window.tolist() == [1] * 11 + [2] * 12 + [3] * 12
    error = result.forecasts["model"] - result.actual
    assert np.isclose(report["metrics"]["model"]["mae"], np.mean(np.abs(error)), rtol=1e-12)
    assert np.isclose(report["metrics"]["model"]["rmse"], np.sqrt(np.mean(error ** 2)), rtol=1e-12)
    mase = np.mean(np.mean(np.abs(error), axis=1) / result.scale)
    assert np.isclose(report["metrics"]["model"]["mase"], mase, rtol=1e-12)

    # Naive baseline of the middle window straight from the CSV: repeat the value at L - 25.
    data = pd.read_csv(SALES)
    errors = []
    for _, rows in data.groupby("unique_id"):
        y = rows["y"].to_numpy()
        errors.append(np.abs(y[-24:-12] - y[-25]))
    assert np.isclose(windows[1]["metrics"]["naive"]["mae"], np.mean(errors), rtol=1e-12)

    lines = report["stdout"].splitlines()
    assert any("3 windows of 12 every 12" in line for line in lines)
    rows = [line.split("│")[1:4] for line in lines if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    assert [[c.strip() for c in r] for r in rows] == [["1", "24", "11"], ["2", "12", "12"], ["3", "0", "12"]]


def test_every_window_scoring_every_series_averages_plainly(sales_run, tmp_path):
    report = run_evaluate(sales_run, tmp_path, "--windows", 2)
    windows = report["per_window"]
    assert [w["n_series"] for w in windows] == [12, 12]
    for who in FORECASTERS:
        for name in ("mae", "smape"):
            mean = np.mean([w["metrics"][who][name] for w in windows])
            assert np.isclose(report["metrics"][who][name], mean, rtol=1e-12), (who, name)


def test_window_forecasts_equal_predict_on_truncated_data(sales_run):
    """One batched pass over every (series, origin) == predict run on the data cut at each origin."""
    run = load_run(sales_run)
    series = read_for_run(run, SALES)
    result = backtest(run, series, windows=4, step=7, season=12)
    assert sorted(set(result.window.tolist())) == [1, 2, 3, 4]
    for k, back in zip(range(1, 5), [21, 14, 7, 0]):
        rows = result.window == k
        keep = result.series[rows].tolist()
        origins = [len(series.values[i]) - H - back for i in keep]
        assert result.origin[rows].tolist() == origins
        expected = forecast(run, truncated(series, keep, origins))
        np.testing.assert_allclose(result.forecasts["model"][rows], expected, rtol=1e-5, atol=1e-4)
        actual = np.stack([series.values[i][o: o + H] for i, o in zip(keep, origins)])
        np.testing.assert_array_equal(result.actual[rows], actual)
    # Truncated with SeriesSet.head as well: the window 12 steps back, every series.
    result = backtest(run, series, windows=2, season=12)
    np.testing.assert_allclose(result.forecasts["model"][result.window == 1],
                               forecast(run, series.head(2 * H)), rtol=1e-5, atol=1e-4)


def test_unseen_series_are_scaled_before_their_earliest_origin(sales_run, tmp_path):
    """New ids: the scaler is fitted on each series' points before its oldest scored origin only."""
    data = pd.read_csv(SALES)
    data["unique_id"] = "new_" + data["unique_id"]
    path = tmp_path / "new.csv"
    data.to_csv(path, index=False)
    run = load_run(sales_run)
    series = read_for_run(run, path)
    assert not set(series.ids) & set(run.scaler.ids)
    result = backtest(run, series, windows=3, season=12)
    oldest = {}
    for j, (i, o) in enumerate(zip(result.series.tolist(), result.origin.tolist())):
        oldest.setdefault(i, (j, o))
    keep = sorted(oldest)
    rows = [oldest[i][0] for i in keep]
    expected = forecast(run, truncated(series, keep, [oldest[i][1] for i in keep]))
    np.testing.assert_allclose(result.forecasts["model"][rows], expected, rtol=1e-5, atol=1e-4)
    # ... and changing the points after the oldest origins changes no forecast of that window.
    later = [v.copy() for v in series.values]
    for i in keep:
        later[i][oldest[i][1]:] *= 3.0
    changed = backtest(run, SeriesSet(series.columns, series.freq, series.ids, series.starts, later),
                       windows=3, season=12)
    np.testing.assert_array_equal(changed.forecasts["model"][rows], result.forecasts["model"][rows])
    report = run_evaluate(sales_run, tmp_path, "--windows", 3, data=path)
    assert [w["n_series"] for w in report["per_window"]] == [11, 12, 12]


def test_overlapping_windows_step_one(sales_run, tmp_path):
    report = run_evaluate(sales_run, tmp_path, "--windows", 30, "--step", 1)
    windows = report["per_window"]
    assert report["windows"] == 30 and report["step"] == 1
    assert [w["window"] for w in windows] == list(range(1, 31))
    assert [w["steps_before_end"] for w in windows] == list(range(29, -1, -1))
    # store_12 needs 12 + back + 1 <= 36 points: scored only where back <= 23.
    assert [w["n_series"] for w in windows] == [11] * 6 + [12] * 24
    # Window 29 (one step back) overlaps the last in 11 of 12 target points; its naive baseline
    # repeats the value at L - 14.
    data = pd.read_csv(SALES)
    errors = [np.abs(rows["y"].to_numpy()[-13:-1] - rows["y"].to_numpy()[-14])
              for _, rows in data.groupby("unique_id")]
    assert np.isclose(windows[28]["metrics"]["naive"]["mae"], np.mean(errors), rtol=1e-12)
    plain = run_evaluate(sales_run, tmp_path)
    assert_metrics_close(windows[-1]["metrics"], plain["metrics"])
    n = np.array([w["n_series"] for w in windows], dtype=float)
    mae = np.array([w["metrics"]["model"]["mae"] for w in windows])
    assert np.isclose(report["metrics"]["model"]["mae"], np.sum(n * mae) / n.sum(), rtol=1e-12)


@pytest.mark.parametrize("options, message", [
    (["--windows", 0], "--windows 0: must be 1 or more"),
    (["--windows", -2], "--windows -2: must be 1 or more"),
    (["--step", 0], "--step 0: must be 1 or more"),
    (["--windows", 3, "--step", -1], "--step -1: must be 1 or more"),
])
def test_bad_windows_or_step_exit_2(sales_run, tmp_path, options, message):
    out = tmp_path / "metrics.json"
    result = run_cli("evaluate", SALES, "--model", sales_run, "--out", out, *options)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"lstmcast: error: {message}")
    assert result.stdout == ""
    assert not out.exists()


def test_too_many_windows_score_what_has_history(sales_run, tmp_path):
    report = run_evaluate(sales_run, tmp_path, "--windows", 8)
    windows = report["per_window"]
    assert [w["steps_before_end"] for w in windows] == [84, 72, 60, 48, 36, 24, 12, 0]
    # 96-point stores need back <= 83, store_12 back <= 23: nobody reaches the oldest window.
    assert [w["n_series"] for w in windows] == [0, 11, 11, 11, 11, 11, 12, 12]
    assert windows[0]["metrics"] is None
    for w in windows[1:]:
        assert all(np.isfinite(v) for row in w["metrics"].values() for v in row.values())
    n = np.array([w["n_series"] for w in windows[1:]], dtype=float)
    mae = np.array([w["metrics"]["model"]["mae"] for w in windows[1:]])
    assert np.isclose(report["metrics"]["model"]["mae"], np.sum(n * mae) / n.sum(), rtol=1e-12)
    row = next(line for line in report["stdout"].splitlines() if line.startswith("│      1 │"))
    assert [c.strip() for c in row.split("│")[1:-1]] == ["1", "84", "0"] + ["-"] * 7   # in-sample too


def test_series_too_short_for_the_latest_window_is_still_an_error(sales_run, tmp_path):
    data = pd.read_csv(SALES)
    data = pd.concat([data, data[data["unique_id"] == "store_12"].head(H).assign(unique_id="tiny")])
    path = tmp_path / "short.csv"
    data.to_csv(path, index=False)
    result = run_cli("evaluate", path, "--model", sales_run, "--windows", 3)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"lstmcast: error: {path}: series 'tiny' has 12 points; evaluate "
                                     f"holds out the last 12, so each series needs at least 13")


def test_json_shape(sales_run, tmp_path):
    out = tmp_path / "bt.json"
    report = evaluate(SALES, sales_run, out, windows=3, step=6)
    written = json.loads(out.read_text())
    assert written == report
    assert list(written) == ["data", "run", "horizon", "season_length", "n_series", "metrics",
                             "windows", "step", "per_window", "in_sample"]
    assert written["data"] == str(SALES) and written["run"] == str(sales_run)
    assert written["horizon"] == H and written["season_length"] == season_length("MS") == 12
    assert written["n_series"] == 12 and written["windows"] == 3 and written["step"] == 6
    assert set(written["metrics"]) == set(FORECASTERS)
    assert [list(w) for w in written["per_window"]] == [["window", "steps_before_end", "n_series", "metrics",
                                                         "in_sample"]] * 3
    assert [(w["window"], w["steps_before_end"], w["n_series"]) for w in written["per_window"]] == [
        (1, 12, 12), (2, 6, 12), (3, 0, 12)]
    for w in written["per_window"]:
        assert set(w["metrics"]) == set(FORECASTERS)
        for row in w["metrics"].values():
            assert set(row) == {"mae", "rmse", "smape", "mase"} and all(np.isfinite(list(row.values())))
