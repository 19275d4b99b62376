"""benchmarks/accuracy.py's own pieces: which part is scored, the rows a backtest scores, the
baselines' scoring and cache. Fast: no lstmcast training, toy series only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_validation_scores_the_points_before_the_test_part(bench):
    histories = [np.arange(10.0), np.arange(100.0, 107.0)]
    actual = np.array([[10.0, 11.0], [107.0, 108.0]])
    same = bench.holdout_split(histories, actual, 2, "test")
    assert same[0] is histories and same[1] is actual and same[2].all()
    train, scored, kept = bench.holdout_split(histories, actual, 2, "validation")
    assert [len(x) for x in train] == [8, 5] and kept.tolist() == [True, True]
    np.testing.assert_array_equal(train[0], np.arange(8.0))
    np.testing.assert_array_equal(scored, [[8.0, 9.0], [105.0, 106.0]])   # never the test points
    assert not np.isin(actual, scored).any()
    # A history too short to lose h and still train (h + 1 points) leaves the validation part.
    train, scored, kept = bench.holdout_split([np.arange(4.0), *histories], actual[[0, 0, 1]], 2, "validation")
    assert kept.tolist() == [False, True, True] and [len(x) for x in train] == [8, 5]
    np.testing.assert_array_equal(scored[1], [105.0, 106.0])
    with pytest.raises(ValueError, match="no history is long enough"):
        bench.holdout_split([np.arange(4.0)], actual[:1], 2, "validation")


def test_backtest_cut_is_by_timestamp_and_windows_shift_back(bench):
    ds = pd.date_range("2024-01-01", periods=12, freq="h")
    frame = pd.DataFrame({"unique_id": "a", "ds": ds, "y": np.arange(12.0)})
    frame = frame.drop(index=[10])                               # a gap in the tail
    cut = bench.drop_last_periods(frame, 4, "h")
    assert cut["ds"].max() == ds[7]                              # 4 periods, not 4 rows
    # W=3 windows of h=2 over 12 points: origins 6, 8, 10; validation drops the last W x h = 6.
    window, index, origin = bench.window_rows(np.array([12, 5]), 2, 3, 2)
    assert list(zip(window, index, origin)) == [(1, 0, 6), (2, 0, 8), (2, 1, 1), (3, 0, 10), (3, 1, 3)]
    # Validation: the same protocol on the 6 points before the test part; the oldest window
    # (origin 0) has no history and is not scored, as evaluate does.
    _, _, shifted = bench.window_rows(np.array([12 - 6]), 2, 3, 2)
    assert list(shifted) == [2, 4] and (shifted + 2 <= 6).all()


def test_perfect_forecast_scores_zero_and_seasonal_naive_scores_one(bench):
    rng = np.random.default_rng(0)
    histories = [rng.uniform(1, 10, 24) for _ in range(3)]
    actual = rng.uniform(1, 10, (3, 6))
    assert bench.smape(actual, actual) == 0.0
    assert bench.mase(histories, actual, actual, 12) == 0.0
    # The history's own seasonal-naive errors, scored against it: MASE 1 by definition.
    x = histories[0]
    assert bench.mase([x], x[None, 12:], x[None, :12], 12) == pytest.approx(1.0)
    assert bench.smape(actual, actual * 3) == pytest.approx(100.0)     # 200 * 2 / 4
    # A history with no seasonal pair (validation on M1) has no scale: MASE leaves it out.
    both = bench.mase([np.arange(1.0, 4.0), x], np.stack([x[12:], x[12:]]), np.stack([x[:12], x[:12]]), 12)
    assert both == pytest.approx(1.0)


def test_baselines_fit_score_and_cache(bench, tmp_path, monkeypatch):
    pytest.importorskip("statsforecast")
    monkeypatch.setenv("LSTMCAST_BENCH_CACHE", str(tmp_path))
    t = np.arange(48)
    histories = [50 + 10 * np.sin(2 * np.pi * t / 12), 20 + 0.5 * t + 3 * np.cos(2 * np.pi * t / 12)]
    found = bench.baselines("toy", "validation", 2, histories, 6, 12)
    assert set(found) == set(bench.BASELINES)
    truth = np.stack([50 + 10 * np.sin(2 * np.pi * np.arange(48, 54) / 12),
                      20 + 0.5 * np.arange(48, 54) + 3 * np.cos(2 * np.pi * np.arange(48, 54) / 12)])
    for name, (forecasts, seconds) in found.items():
        assert forecasts.shape == (2, 6) and np.isfinite(forecasts).all() and seconds >= 0
        assert bench.smape(truth, forecasts) < 5, name          # exact seasonal patterns: close
    (cached,) = tmp_path.glob("toy_validation_2_sf*_*.npz")

    def refit(*_):
        raise AssertionError("fitted again despite the cache")

    monkeypatch.setattr(bench, "fit_baselines", refit)
    again = bench.baselines("toy", "validation", 2, histories, 6, 12)
    for name in bench.BASELINES:
        np.testing.assert_array_equal(again[name][0], found[name][0])
    other = bench.cache_file("toy", "validation", 2, [histories[0], histories[1] + 1], 6, 12)
    assert other != cached                                       # other data: another entry
    assert bench.cache_file("toy", "test", 2, histories, 6, 12) != cached
