"""evaluate in bounded memory: each chunk's backtest is folded into exact per-window sums
(scoresums) and dropped; the report has the same bytes for every chunk size, and what the
accumulator keeps does not grow with the number of scored points."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from conftest import SALES, run_cli

from lstmcast.evaluate import FORECASTERS, SEEN_AS, backtest, score, score_quantiles
from lstmcast.metrics import point_metrics
from lstmcast.predict import load_run, read_for_run
from lstmcast.scoresums import UNIT_BITS, ExactSums, WindowScores

pytestmark = pytest.mark.usefixtures("one_thread")
H = 12   # the sample run's horizon


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """17 monthly series of 30..61 points: two of the run's own stores (in-sample points), a flat
    one (MASE scale 0: left out of MASE), one of zeros and negatives (sMAPE's 0/0 terms)."""
    rng = np.random.default_rng(3)
    frames = [pd.read_csv(SALES).query("unique_id in ['store_01', 'store_02']")]
    for k in range(15):
        n = 30 + 2 * k + (k % 3)
        y = 100 + 20 * np.sin(np.arange(n) * np.pi / 6) + rng.normal(0, 5, n)
        if k == 4:
            y = np.full(n, 42.0)
        if k == 9:
            y = np.where(np.arange(n) % 4 == 0, 0.0, y - 100)
        frames.append(pd.DataFrame({"unique_id": f"gen_{k:02d}",
                                    "ds": pd.date_range("2015-01-01", periods=n, freq="MS").strftime("%Y-%m-%d"),
                                    "y": np.round(y, 2)}))
    path = tmp_path_factory.mktemp("data") / "generated.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def evaluated(data, run, out, chunk: str) -> tuple[str, str]:
    result = run_cli("evaluate", data, "--model", run, "--out", out, "--windows", "3", "--chunk-series", chunk)
    assert result.exit_code == 0, result.stderr
    return out.read_text().replace(str(out), ""), result.stdout


def test_the_same_report_for_every_chunk(quantile_run, generated, tmp_path):
    whole, table = evaluated(generated, quantile_run, tmp_path / "m0.json", "0")
    for chunk in ("1", "7"):
        text, printed = evaluated(generated, quantile_run, tmp_path / f"m{chunk}.json", chunk)
        assert text == whole and printed == table
    report = json.loads(whole)
    # The series of 30, 33, 36 and 36 points miss the oldest window: its origin, 36 points before the
    # end, needs one point before it.
    assert report["n_series"] == 17
    assert [w["n_series"] for w in report["per_window"]] == [13, 17, 17]
    assert report["in_sample"]["of"] == (13 + 17 + 17) * H
    assert report["in_sample"]["points"] > 0                         # store_01 and store_02 trained it
    assert report["per_window"][0]["in_sample"]["points"] <= 2 * H

    # The sums agree with metrics.point_metrics / quantile_metrics over every point kept at once.
    run = load_run(quantile_run)
    result = backtest(run, read_for_run(run, generated), windows=3, season=12)
    every = np.ones(len(result.window), dtype=bool)
    for got, rows in [(report, every)] + [(w, result.window == w["window"]) for w in report["per_window"]]:
        kept = score(result, rows)
        for who in FORECASTERS:
            for name, value in kept[who].items():
                assert math.isclose(got["metrics"][who][name], value, rel_tol=1e-13), (who, name)
        quantiles = score_quantiles(run, result, rows)
        assert got["intervals"]["0.1-0.9"]["coverage"] == quantiles["intervals"]["0.1-0.9"]["coverage"]
        assert math.isclose(got["intervals"]["0.1-0.9"]["width"], quantiles["intervals"]["0.1-0.9"]["width"],
                            rel_tol=1e-13)
        for level, loss in quantiles["quantile_loss"].items():
            assert math.isclose(got["quantile_loss"][level], loss, rel_tol=1e-13)
    # By hand: the latest window's naive MAE repeats each series' 13th-last value.
    data = pd.read_csv(generated)
    errors = [np.abs(g["y"].to_numpy()[-H:] - g["y"].to_numpy()[-H - 1]) for _, g in data.groupby("unique_id")]
    assert math.isclose(report["per_window"][-1]["metrics"]["naive"]["mae"], np.mean(errors), rel_tol=1e-13)


def exact(values) -> Fraction:
    return sum((Fraction(float(v)) for v in np.ravel(values)), Fraction(0))


def test_exact_sums_are_exact_in_any_order():
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, 1000) * 10.0 ** rng.integers(-30, 30, 1000)
    values[:3] = [5e-324, -0.0, 1e300]                                  # a subnormal, a signed zero, a huge one
    group = rng.integers(0, 3, 1000)
    one, parts = ExactSums(3), ExactSums(3)
    one.add(values, group)
    order = rng.permutation(1000)
    for lo in range(0, 1000, 7):                                        # in another order, 7 at a time
        parts.add(values[order[lo:lo + 7]], group[order[lo:lo + 7]])
    assert one.total == parts.total
    for g in range(3):
        assert Fraction(one.total[g], 2 ** UNIT_BITS) == exact(values[group == g])
        assert one.mean(g, 10) == float(exact(values[group == g]) / 10)   # rounded once
    assert Fraction(one.merged().total[0], 2 ** UNIT_BITS) == exact(values)

    # Non-finite values end the sum as a float sum would.
    odd = ExactSums(4)
    odd.add(np.array([[1.0, np.nan], [np.inf, 2.0], [np.inf, -np.inf], [-np.inf, 3.0]]), np.arange(4))
    assert math.isnan(odd.mean(0, 2)) and odd.mean(1, 2) == math.inf
    assert math.isnan(odd.mean(2, 2)) and odd.mean(3, 2) == -math.inf


def fed(rows: int, windows: int = 3, horizon: int = 6, seed: int = 0) -> tuple[WindowScores, dict]:
    """WindowScores fed `rows` random (series, window) rows in chunks of 50, and the same rows kept."""
    rng = np.random.default_rng(seed)
    levels = (0.1, 0.5, 0.9)
    scores = WindowScores.for_run(windows, horizon, FORECASTERS, levels, [0.1, 0.5, 0.9], SEEN_AS)
    kept = {"window": [], "actual": [], "scale": [], "quantiles": []}
    for lo in range(0, rows, 50):
        n = min(50, rows - lo)
        window = rng.integers(0, windows, n)
        actual = rng.normal(100, 20, (n, horizon))
        quantiles = np.sort(actual[..., None] + rng.normal(0, 15, (n, horizon, 3)), axis=-1)
        forecasts = {"model": quantiles[..., 1], "naive": actual + 3.0, "seasonal_naive": actual * 0.9}
        scale = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(1, 5, n))    # some flat histories
        upto = np.cumsum(rng.integers(0, 3, (len(SEEN_AS), n)), axis=0)
        scores.add(window, actual, forecasts, scale, quantiles, levels, upto)
        for key, value in [("window", window), ("actual", actual), ("scale", scale), ("quantiles", quantiles)]:
            kept[key].append(value)
    return scores, {key: np.concatenate(value) for key, value in kept.items()}


def arrays_in(scores: WindowScores) -> list[int]:
    """The size of every numpy array and the number of Python integers the accumulator holds."""
    sizes = []

    def visit(value) -> None:
        if isinstance(value, np.ndarray):
            sizes.append(value.size)
        elif isinstance(value, ExactSums):
            sizes.append(len(value.total))
            for flags in (value.nan, value.plus, value.minus):
                visit(flags)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(vars(scores))
    return sizes


def test_the_accumulator_does_not_grow_with_the_points():
    small, kept = fed(400)
    large, _ = fed(1600, seed=1)
    assert arrays_in(small) == arrays_in(large)                         # the same state for 4x the points
    assert max(arrays_in(large)) == len(SEEN_AS) * 3                    # at most a number per (kind, window)
    assert all(t.bit_length() < UNIT_BITS + 64 for s in large.sums.values() for t in s.total)
    assert large.rows.sum() == 1600 and small.rows.sum() == 400

    # Its report is metrics.point_metrics over every row kept.
    for w in range(3):
        rows = kept["window"] == w
        actual = kept["actual"][rows]
        assert small.metrics(w)["naive"] == pytest.approx({"mae": 3.0, "rmse": 3.0, "smape": np.mean(
            600.0 / (np.abs(actual) + np.abs(actual + 3.0))), "mase": point_metrics(
            actual, actual + 3.0, kept["scale"][rows])["mase"]}, rel=1e-13)
        model = point_metrics(actual, kept["quantiles"][rows][..., 1], kept["scale"][rows])
        assert small.metrics(w)["model"] == pytest.approx(model, rel=1e-13)
        inside = (actual >= kept["quantiles"][rows][..., 0]) & (actual <= kept["quantiles"][rows][..., 2])
        assert small.quantile_scores(w)["intervals"]["0.1-0.9"]["coverage"] == inside.mean()
        assert small.in_sample(w)["of"] == rows.sum() * 6
    whole = small.overall()
    assert whole.rows.tolist() == [400]
    assert whole.metrics(0)["model"] == pytest.approx(
        point_metrics(kept["actual"], kept["quantiles"][..., 1], kept["scale"]), rel=1e-13)


def test_a_window_without_rows_scores_none():
    scores = WindowScores.for_run(2, 4, FORECASTERS, None, [], None)
    scores.add(np.array([1]), np.ones((1, 4)), {name: np.zeros((1, 4)) for name in FORECASTERS}, np.array([1.0]))
    assert scores.metrics(0) is None and scores.in_sample(0) is None
    assert scores.metrics(1)["naive"] == {"mae": 1.0, "rmse": 1.0, "smape": 200.0, "mase": 1.0}
    assert scores.quantile_scores(0) == {"intervals": None, "quantile_loss": None}
