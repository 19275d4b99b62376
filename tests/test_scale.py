"""The vectorised data path (issue 13): the same bits as the series-by-series code it replaced,
sharded prediction, sorted and unsorted files read alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import SALES, error_line, run_cli

from lstmcast import timegrid
from lstmcast.covariates import _position
from lstmcast.data import read_series
from lstmcast.outputs import csv_text
from lstmcast.predict import parse_shard, shard_of
from lstmcast.scaling import _fit_one, fit_many

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("method", ["standard", "robust", "minmax", "none"])
def test_fit_many_is_fit_one_bit_for_bit(method):
    rng = np.random.default_rng(0)
    parts = [rng.normal(5, 3, int(n)) for n in rng.integers(1, 60, 400)] + [np.full(9, 2.5), np.zeros(0)]
    loc, scale = fit_many(method, parts)
    for k, part in enumerate(parts[:-1]):
        assert (loc[k], scale[k]) == _fit_one(method, part)
    assert (loc[-1], scale[-1]) == (0.0, 1.0)       # an empty history: nothing to fit
    assert scale[-2] == 1.0                          # a flat series keeps scale 1


def test_calendar_fields_per_unique_equal_pandas():
    # Over 65,536 rows with few distinct times: the per-unique path.
    times = pd.DatetimeIndex(np.repeat(pd.date_range("1899-12-25", periods=3000, freq="37h").values, 30))
    assert (timegrid._month_index(times) == times.year.to_numpy() * 12 + times.month.to_numpy() - 1).all()
    assert (timegrid._day_of_month(times) == times.day.to_numpy()).all()
    assert (timegrid._day_of_week(times) == times.day_of_week.to_numpy()).all()
    assert (timegrid._is_month_end(times) == np.asarray(times.is_month_end)).all()
    # WallTimes: one factorization for every field, and rows taken from it, the same numbers.
    wall = timegrid.WallTimes(times)
    rows = np.arange(len(times))[::-7]
    for name, field in [("month_index", timegrid._month_index), ("day_of_month", timegrid._day_of_month),
                        ("day_of_week", timegrid._day_of_week), ("is_month_end", timegrid._is_month_end)]:
        assert (wall.field(name) == field(times)).all(), name
        assert (wall.take(rows).field(name) == field(times[rows])).all(), name
    assert wall._unique is not None and len(wall._unique) == 3000   # one factorization, on the first field
    zoned = pd.date_range("2019-03-01", periods=2000, freq="97min", tz="Europe/Paris")
    assert (_position(zoned, "hour") == zoned.hour.to_numpy() + zoned.minute.to_numpy() / 60.0).all()
    assert (_position(zoned, "dayofyear") == zoned.day_of_year.to_numpy() - 1.0).all()
    assert (_position(zoned, "quarter") == zoned.quarter.to_numpy() - 1.0).all()


@pytest.mark.parametrize("freq,tz", [("MS", None), ("h", None), ("h", "Europe/Paris"), ("15min", "UTC")])
def test_csv_text_is_to_csv_byte_for_byte(freq, tz):
    times = pd.date_range("2020-01-01", periods=6, freq=freq, tz=tz)
    frame = pd.DataFrame({"id": np.repeat(["a", "b,c"], 30), "ds": np.tile(times, 10),
                          "forecast": np.random.default_rng(1).random(60) * 1e6})
    assert csv_text(frame) == frame.to_csv(index=False)


def test_unsorted_file_reads_like_sorted(tmp_path):
    frame = pd.read_csv(SALES)
    shuffled = tmp_path / "shuffled.csv"
    frame.sample(frac=1.0, random_state=0).to_csv(shuffled, index=False)
    a, b = read_series(SALES), read_series(shuffled)
    assert sorted(a.ids) == sorted(b.ids) and len(a.ids) == 12
    order = {sid: k for k, sid in enumerate(b.ids)}
    for sid, start, values in zip(a.ids, a.starts, a.values):
        assert b.starts[order[sid]] == start
        np.testing.assert_array_equal(b.values[order[sid]], values)


def test_duplicate_in_unsorted_file_names_both_lines(tmp_path):
    data = tmp_path / "dup.csv"
    data.write_text("unique_id,ds,y\nb,2020-01-01,1\na,2020-01-02,2\na,2020-01-01,3\nb,2020-01-02,4\n"
                    "a,2020-01-02,5\na,2020-01-03,6\n")
    result = run_cli("train", data, "--out", tmp_path / "run")
    error_line(result, str(data), "line 6", "first at line 3", "series 'a'", "2020-01-02")


def test_parse_shard():
    assert parse_shard(None) is None
    assert parse_shard("2/5") == (2, 5)
    for bad in ["5/5", "-1/3", "1", "a/b", "1/0", "1/2/3"]:
        with pytest.raises(Exception, match="i/N"):
            parse_shard(bad)


def test_shard_of_is_crc32():
    # The assignment is part of the contract (schedulers on other hosts must agree): pinned values.
    assert list(shard_of(["store_01", "store_02", "a", "é"], 7)) == [4, 1, 4, 4]   # CRC-32 of UTF-8, mod 7
    assert shard_of(["x"], 1)[0] == 0


def test_shards_together_are_the_whole_forecast(sales_run, tmp_path):
    whole = tmp_path / "whole.csv"
    assert run_cli("predict", SALES, "--model", sales_run, "--out", whole).exit_code == 0
    expected = pd.read_csv(whole, dtype=str)
    parts = []
    for i in range(3):
        out = tmp_path / f"shard{i}.csv"
        result = run_cli("predict", SALES, "--model", sales_run, "--out", out, "--shard", f"{i}/3")
        assert result.exit_code == 0, result.stderr
        assert f"steps, shard {i}/3)" in result.stderr
        parts.append(pd.read_csv(out, dtype=str))
    assert all(len(p) for p in parts)                # the sample's ids spread over all three shards
    ids = [set(p["unique_id"]) for p in parts]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    together = pd.concat(parts).sort_values(["unique_id", "ds"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(together, expected.sort_values(["unique_id", "ds"]).reset_index(drop=True))


def test_empty_shard_writes_the_header(sales_run, tmp_path):
    ids = pd.read_csv(SALES)["unique_id"].astype(str).unique().tolist()
    count = 4 * len(ids) + 1
    empty = next(i for i in range(count) if i not in set(shard_of(ids, count)))
    out = tmp_path / "empty.csv"
    result = run_cli("predict", SALES, "--model", sales_run, "--out", out, "--shard", f"{empty}/{count}")
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == "unique_id,ds,forecast\n"
    assert "wrote 0 forecasts (0 series" in result.stderr


def test_bad_shard_is_one_line(sales_run, tmp_path):
    result = run_cli("predict", SALES, "--model", sales_run, "--out", tmp_path / "f.csv", "--shard", "3/3")
    error_line(result, "--shard 3/3", "i/N")
    assert not (tmp_path / "f.csv").exists()


def test_validation_sample_is_fixed_and_bounded():
    import torch

    from lstmcast.validation import sampled
    starts = torch.arange(100, 1100)
    assert sampled(starts, None, 0) is starts
    assert sampled(starts, 1000, 0) is starts
    a, b, c = sampled(starts, 50, 3), sampled(starts, 50, 3), sampled(starts, 50, 4)
    assert len(a) == 50 and torch.equal(a, b) and not torch.equal(a, c)
    assert (a[1:] > a[:-1]).all() and set(a.tolist()) <= set(starts.tolist())


def test_training_with_a_validation_sample(tmp_path):
    # 12 series, early stopping on 5 of them: trains, and metrics.json still scores all 12.
    import json
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, "--set", "train.epochs=2", "--set", "model.hidden_size=8",
                     "--set", "model.layers=1", "--set", "train.validation_series=5")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation_windows"]["n_series"] == 12
    full = tmp_path / "full"
    assert run_cli("train", SALES, "--out", full, "--set", "train.epochs=2", "--set", "model.hidden_size=8",
                   "--set", "model.layers=1").exit_code == 0
    import pandas as pd
    sample, every = pd.read_csv(out / "history.csv"), pd.read_csv(full / "history.csv")
    assert len(sample) == len(every) == 2
    assert sample["train_loss"].iloc[0] == every["train_loss"].iloc[0]   # the same first epoch of training
    assert sample["val_loss"].iloc[0] != every["val_loss"].iloc[0]       # judged on 5 series, not 12


def test_warning_when_the_model_loses_to_seasonal_naive():
    from lstmcast.cli import _loses_to_seasonal_naive
    worse = {"model": {"mase": 3.125}, "seasonal_naive": {"mase": 0.968}}
    line = _loses_to_seasonal_naive(worse)
    assert "3.125" in line and "0.968" in line and "--time-budget" in line
    assert _loses_to_seasonal_naive({"model": {"mase": 0.7}, "seasonal_naive": {"mase": 0.968}}) is None
    assert _loses_to_seasonal_naive({"model": {"mase": float("nan")}, "seasonal_naive": {"mase": 1.0}}) is None
    assert _loses_to_seasonal_naive({}) is None


def _folder_of_inputs(tmp_path, bad: bool):
    folder = tmp_path / "in"
    folder.mkdir()
    frame = pd.read_csv(SALES)
    ids = frame["unique_id"].unique()
    frame[frame["unique_id"].isin(ids[:6])].to_csv(folder / "a.csv", index=False)
    frame[frame["unique_id"].isin(ids[6:])].to_csv(folder / "b.csv", index=False)
    if bad:
        (folder / "c.csv").write_text("unique_id,ds,y\nx,2020-01-01,1\nx,2020-13-01,2\n")
    (folder / "notes.txt").write_text("not a csv")
    return folder


def test_predict_over_a_folder_writes_one_output_per_input(sales_run, tmp_path):
    folder, out = _folder_of_inputs(tmp_path, bad=False), tmp_path / "out"
    result = run_cli("predict", folder, "--model", sales_run, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "b.csv"]
    assert "wrote forecasts for 2 files" in result.stderr
    single = tmp_path / "single.csv"
    assert run_cli("predict", folder / "a.csv", "--model", sales_run, "--out", single).exit_code == 0
    assert (out / "a.csv").read_bytes() == single.read_bytes()
    glob_out = tmp_path / "glob"
    assert run_cli("predict", str(folder / "*.csv"), "--model", sales_run, "--out", glob_out).exit_code == 0
    assert (glob_out / "b.csv").read_bytes() == (out / "b.csv").read_bytes()


def test_predict_over_a_folder_goes_on_past_a_bad_file(sales_run, tmp_path):
    folder, out = _folder_of_inputs(tmp_path, bad=True), tmp_path / "out"
    result = run_cli("predict", folder, "--model", sales_run, "--out", out)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "c.csv" in lines[0] and lines[0].startswith("lstmcast: error: ")
    assert "1 of 3 files failed (c.csv" in lines[1] and "the other 2" in lines[1]
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "b.csv"]


def test_predict_over_a_folder_refuses_unsafe_outputs(sales_run, tmp_path):
    folder = _folder_of_inputs(tmp_path, bad=False)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    error_line(run_cli("predict", folder, "--model", sales_run, "--out", folder), "inputs' own folder")
    (tmp_path / "file.csv").write_text("x")
    error_line(run_cli("predict", folder, "--model", sales_run, "--out", tmp_path / "file.csv"), "a folder")
    error_line(run_cli("predict", str(tmp_path / "none" / "*.csv"), "--model", sales_run, "--out",
                       tmp_path / "o"), "no CSV files")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_metrics_time_the_set_up_apart_from_the_epochs(tmp_path):
    # benchmarks/scale.py's set-up figure: the train call's wall time less metrics.json's timing
    # from the first epoch on (epochs, checkpoints and wrap-up).
    import importlib.util
    import json
    import time
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("bench_scale", Path(__file__).parents[1] / "benchmarks" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    out = tmp_path / "run"
    started = time.perf_counter()
    result = run_cli("train", SALES, "--out", out, "--set", "train.epochs=2", "--set", "model.hidden_size=8",
                     "--set", "model.layers=1", "--set", "train.recipe=none")
    wall = time.perf_counter() - started
    assert result.exit_code == 0, result.stderr
    timing = json.loads((out / "metrics.json").read_text())["timing"]
    epochs = pd.read_csv(out / "history.csv")["seconds"].sum()
    assert timing["before_first_epoch"] > 0 and timing["from_first_epoch"] >= epochs
    assert timing["before_first_epoch"] + timing["from_first_epoch"] <= wall
    assert scale.before_first_epoch(out, wall) == pytest.approx(wall - timing["from_first_epoch"])


@pytest.mark.parametrize("name,first", [("MS", "2011-01-01"), ("ME", "2011-01-31"), ("QE-DEC", "2011-03-31"),
                                        ("B", "2011-01-03"), ("W-WED", "2011-01-05"), ("MS@15", "2011-01-15"),
                                        ("h", "2011-03-27 00:00+00:00"), ("15min", "2011-01-01")])
def test_series_grid_is_series_times(name, first):
    # Calendar features are computed once per point of one grid spanning every series: the grid's
    # rows are exactly each series' own timestamps.
    freq = timegrid.parse_freq(name)
    rng = np.random.default_rng(0)
    starts = timegrid.shift(freq, pd.DatetimeIndex([pd.Timestamp(first)] * 60), rng.integers(0, 40, 60))
    lengths = rng.integers(1, 30, 60)
    grid, rows = timegrid.series_grid(freq, starts, lengths)
    assert grid[rows].equals(timegrid.series_times(freq, starts, lengths))
    # A start off the earliest start's grid (half an hour later), or a grid far longer than the
    # series: None, and the caller uses series_times itself.
    hourly = timegrid.parse_freq("h")
    assert timegrid.series_grid(hourly, pd.DatetimeIndex(["2011-01-01 00:00", "2011-01-02 00:30"]), [5, 5]) is None
    assert timegrid.series_grid(hourly, pd.DatetimeIndex(["2011-01-01", "2021-01-01"]), [5, 5]) is None


def test_isoformats_are_timestamp_isoformat():
    for tz in (None, "UTC", "Europe/Paris"):
        times = pd.date_range("2020-03-29", periods=50, freq="37min", tz=tz).repeat(3)
        assert timegrid.isoformats(times) == [t.isoformat() for t in times]
        assert timegrid.isoformats(list(times)) == [t.isoformat() for t in times]


def test_an_epoch_draws_few_of_many_windows_without_permuting_them_all(monkeypatch):
    # windows_per_epoch of a large file: k distinct windows in O(k), never a permutation of all n.
    import torch

    from lstmcast.epoch import draw
    real = torch.randperm

    def small_only(n, *args, **kwargs):
        assert n <= 4_000, "a permutation of every window"
        return real(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", small_only)
    generator = torch.Generator().manual_seed(0)
    got = draw(10**9, 76_800, generator)
    assert got.shape == (76_800,) and len(torch.unique(got)) == 76_800
    assert int(got.min()) >= 0 and int(got.max()) < 10**9
    again = draw(10**9, 76_800, torch.Generator().manual_seed(0))
    assert torch.equal(got, again)                               # the generator decides
    # Few values to draw from: still without replacement, each value about equally often.
    counts = torch.zeros(100, dtype=torch.long)
    for _ in range(2_000):
        picked = draw(100, 20, generator)
        assert len(torch.unique(picked)) == 20
        counts += torch.bincount(picked, minlength=100)
    assert counts.sum() == 40_000 and 320 < int(counts.min()) <= int(counts.max()) < 480
    assert torch.equal(draw(1_000, 300, torch.Generator().manual_seed(1)),
                       real(1_000, generator=torch.Generator().manual_seed(1))[:300])   # k > n / 4: as before
