"""Reading data right: ids as text, frequencies stated or inferred (never guessed) across
calendars, day/month order, UTC offsets, delimiters, and the future timestamps of forecasts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import cli, error_line

from lstmcast import timegrid
from lstmcast.data import read_series

FAST = ["--set", "train.epochs=1", "--set", "model.hidden_size=8", "--set", "model.layers=1",
        "--horizon", "2", "-q"]






def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def single(times, values=None) -> str:
    values = range(1, len(times) + 1) if values is None else values
    return "ds,y\n" + "".join(f"{t},{v}\n" for t, v in zip(times, values))


def stamps(index: pd.DatetimeIndex) -> list[str]:
    return [str(t.date()) if t == t.normalize() else str(t) for t in index]


def train_predict(tmp_path: Path, data: Path, *extra: str) -> pd.DataFrame:
    run, out = tmp_path / "run", tmp_path / "forecast.csv"
    result = cli("train", data, "--out", run, *FAST, *extra)
    assert result.exit_code == 0, result.output
    result = cli("predict", data, "--model", run, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return pd.read_csv(out, dtype=str, keep_default_na=False)


# ---------------------------------------------------------------------------------------------
# timegrid units


@pytest.mark.parametrize("alias, name, season", [
    ("D", "D", 7), ("B", "B", 5), ("W", "W-SUN", 52), ("W-WED", "W-WED", 52), ("MS", "MS", 12),
    ("M", "ME", 12), ("ME", "ME", 12), ("MS@15", "MS@15", 12), ("2MS", "2MS", 6), ("QS", "QS-JAN", 4),
    ("QS-APR", "QS-JAN", 4), ("Q", "QE-DEC", 4), ("QE-NOV", "QE-FEB", 4), ("YS", "YS-JAN", 1),
    ("A", "YE-DEC", 1), ("h", "h", 24), ("15min", "15min", 96), ("3D", "3D", 1),
])
def test_parse_freq_names_and_season_lengths(alias, name, season):
    freq = timegrid.parse_freq(alias)
    assert freq.name == name
    assert timegrid.parse_freq(name) == freq  # the stored name reads back as the same grid
    assert timegrid.season_length(name) == season


@pytest.mark.parametrize("bad", ["XX", "ME@15", "MS@30", "SMS"])
def test_parse_freq_rejects(bad):
    with pytest.raises(timegrid.FreqError):
        timegrid.parse_freq(bad)


def test_calendar_features_and_seasons_come_from_one_table():
    from lstmcast import covariates, metrics
    for name in ("h", "15min", "D", "B", "W-WED", "MS", "MS@15", "QE-DEC", "YS-JAN"):
        assert metrics.season_length(name) == timegrid.season_length(name)
        assert covariates.calendar_parts(name) == timegrid.calendar_parts(name)
    assert [n for n, _ in timegrid.calendar_parts("MS@15")] == ["month"]
    assert [n for n, _ in timegrid.calendar_parts("B")] == ["dayofweek", "dayofyear"]


def test_positions_and_shift_vectorised():
    freq = timegrid.parse_freq("QE-DEC")
    times = pd.DatetimeIndex(["2020-03-31", "2020-09-30", "2020-10-31", "2021-06-30"])
    starts = pd.DatetimeIndex(["2020-03-31"] * 4)
    assert timegrid.positions(freq, times, starts).tolist() == [0, 2, -1, 5]
    shifted = timegrid.shift(freq, pd.DatetimeIndex(["2020-12-31", "2021-03-31"]), [1, 4])
    assert stamps(shifted) == ["2021-03-31", "2022-03-31"]
    future = timegrid.future_times(timegrid.BDAY, pd.DatetimeIndex(["2021-01-08", "2021-01-06"]), 2)
    assert stamps(future) == ["2021-01-11", "2021-01-12", "2021-01-07", "2021-01-08"]


# ---------------------------------------------------------------------------------------------
# frequencies across calendars, with and without gaps: the inferred name and the future times


def _grid(start: str, freq: str, n: int = 10) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq=freq)


CALENDARS = [
    # id, timestamps, inferred name, the two timestamps after the last
    ("mid-month", _grid("2020-01-01", "MS") + pd.Timedelta(days=14), "MS@15", ["2020-11-15", "2020-12-15"]),
    ("month-end", _grid("2020-01-31", "ME"), "ME", ["2020-11-30", "2020-12-31"]),
    ("month-start", _grid("2020-01-01", "MS"), "MS", ["2020-11-01", "2020-12-01"]),
    ("quarter-end", _grid("2020-03-31", "QE"), "QE-DEC", ["2022-09-30", "2022-12-31"]),
    ("quarter-start", _grid("2020-02-01", "QS-FEB"), "QS-FEB", ["2022-08-01", "2022-11-01"]),
    ("year-end", _grid("2000-12-31", "YE"), "YE-DEC", ["2010-12-31", "2011-12-31"]),
    ("year-start", _grid("2000-01-01", "YS"), "YS-JAN", ["2010-01-01", "2011-01-01"]),
    ("business-day", _grid("2021-01-04", "B"), "B", ["2021-01-18", "2021-01-19"]),
    ("weekly-wednesday", _grid("2021-01-06", "W-WED"), "W-WED", ["2021-03-17", "2021-03-24"]),
    ("hourly", _grid("2021-01-01 20:00", "h"), "h", ["2021-01-02 06:00:00", "2021-01-02 07:00:00"]),
    ("daily", _grid("2021-01-01", "D"), "D", ["2021-01-11", "2021-01-12"]),
]


@pytest.mark.parametrize("gap", [False, True], ids=["no-gap", "gap"])
@pytest.mark.parametrize("times, name, future", [pytest.param(*c[1:], id=c[0]) for c in CALENDARS])
def test_frequency_across_calendars(tmp_path, times, name, future, gap):
    kept = times.delete(4) if gap else times  # one missing step (a holiday, a missing quarter)
    path = write(tmp_path, single([stamps(pd.DatetimeIndex([t]))[0] for t in kept]))
    series = read_series(path, fill="interpolate")
    assert series.freq == name
    assert series.lengths().tolist() == [len(times)]
    assert series.starts == [times[0]]
    assert stamps(series.future_times(0, 2)) == future
    np.testing.assert_allclose(series.values[0], np.arange(1, len(times) + 1) if not gap
                               else np.r_[1, 2, 3, 4, 4.5, 5, 6, 7, 8, 9])


def test_business_days_with_holiday_forecast_on_weekdays(tmp_path):
    days = _grid("2021-03-01", "B", 25).delete(9)  # Friday 2021-03-12 is a holiday
    path = write(tmp_path, "unique_id,ds,y\n" + "".join(f"s,{t.date()},{i}\n" for i, t in enumerate(days)))
    forecast = train_predict(tmp_path, path, "--set", "data.fill=ffill")
    assert forecast["ds"].tolist() == ["2021-04-05", "2021-04-06"]  # after Friday 04-02: Monday
    assert (pd.to_datetime(forecast["ds"]).dt.day_of_week < 5).all()


def test_mid_month_train_predict(tmp_path):
    times = _grid("2019-01-01", "MS", 14) + pd.Timedelta(days=14)
    path = write(tmp_path, single([t.date() for t in times]))
    forecast = train_predict(tmp_path, path)
    assert forecast["ds"].tolist() == ["2020-03-15", "2020-04-15"]


def test_several_candidates_are_listed_not_guessed(tmp_path):
    path = write(tmp_path, single(["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07"]))  # Mon..Thu
    result = cli("train", path, "--out", tmp_path / "run", *FAST)
    error_line(result, str(path), "several frequencies", "D, B", "--freq", "data.freq")
    assert not (tmp_path / "run").exists()


def test_stated_freq_decides_and_is_checked(tmp_path):
    path = write(tmp_path, single(["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07", "2021-01-08"]))
    forecast = train_predict(tmp_path, path, "--freq", "B")
    assert forecast["ds"].tolist() == ["2021-01-11", "2021-01-12"]
    assert read_series(path, freq="D").freq == "D"
    result = cli("train", path, "--out", tmp_path / "run2", *FAST, "--freq", "W-WED")
    error_line(result, str(path), "series 'y' has 2021-01-04", "'W-WED'", "data.freq")
    result = cli("train", path, "--out", tmp_path / "run3", *FAST, "--set", "data.freq=fortnightly")
    error_line(result, "data.freq", "'fortnightly'")


def test_no_regular_grid_asks_for_freq(tmp_path):
    path = write(tmp_path, single(["2021-01-04", "2021-01-05", "2021-01-19", "2021-02-27", "2021-04-01"]))
    result = cli("train", path, "--out", tmp_path / "run", *FAST)
    error_line(result, str(path), "regular grid", "--freq")


# ---------------------------------------------------------------------------------------------
# ids, dates, zones


def test_ids_round_trip_as_text(tmp_path):
    body = "".join(f"{sid},{t.date()},{i + k}\n" for k, sid in enumerate(["007", "012", "NA"])
                   for i, t in enumerate(_grid("2021-01-01", "D", 8)))
    path = write(tmp_path, "unique_id,ds,y\n" + body)
    assert read_series(path).ids == ["007", "012", "NA"]
    forecast = train_predict(tmp_path, path)
    assert forecast["unique_id"].tolist() == ["007", "007", "012", "012", "NA", "NA"]
    assert forecast["ds"].tolist() == ["2021-01-09", "2021-01-10"] * 3


def test_ambiguous_day_month_is_an_error(tmp_path):
    path = write(tmp_path, single([f"{d:02d}/02/2021" for d in range(1, 9)]))
    result = cli("train", path, "--out", tmp_path / "run", *FAST)
    error_line(result, str(path), "line 2", "'01/02/2021'", "data.dayfirst")
    series = read_series(path, dayfirst=True)
    assert series.starts == [pd.Timestamp("2021-02-01")] and series.freq == "D"
    series = read_series(path, dayfirst=False)
    assert series.starts == [pd.Timestamp("2021-01-02")] and series.freq == "MS@2"


def test_day_month_order_decided_by_the_file(tmp_path):
    days = _grid("2021-01-28", "D", 8)
    path = write(tmp_path, single([t.strftime("%d/%m/%Y") for t in days]))  # 28/01/2021 .. 04/02/2021
    series = read_series(path)
    assert series.starts == [days[0]] and series.freq == "D" and series.lengths().tolist() == [8]
    path = write(tmp_path, single([t.strftime("%m/%d/%Y") for t in days]), name="us.csv")
    assert read_series(path).starts == [days[0]]


def test_dst_offsets_accepted_and_forecasts_carry_the_last_offset(tmp_path):
    utc = pd.date_range("2021-03-27 12:00", periods=24, freq="h", tz="UTC")
    local = utc.tz_convert("Europe/Berlin")  # 01:00+01:00 is followed by 03:00+02:00
    path = write(tmp_path, single([t.isoformat() for t in local]))
    series = read_series(path)
    assert series.freq == "h" and series.lengths().tolist() == [24]
    forecast = train_predict(tmp_path, path)
    assert forecast["ds"].tolist() == ["2021-03-28 14:00:00+02:00", "2021-03-28 15:00:00+02:00"]


def test_one_fixed_offset_kept(tmp_path):
    times = pd.date_range("2021-01-01", periods=8, freq="D", tz="UTC").tz_convert("Etc/GMT-5")
    path = write(tmp_path, single([t.isoformat() for t in times]))
    series = read_series(path)
    assert series.freq == "D"
    assert [str(t) for t in series.future_times(0, 1)] == ["2021-01-09 05:00:00+05:00"]


def test_mixed_naive_and_offset_is_an_error(tmp_path):
    path = write(tmp_path, single(["2021-01-01T00:00+01:00", "2021-01-01T01:00", "2021-01-01T02:00+01:00"]))
    result = cli("train", path, "--out", tmp_path / "run", *FAST)
    error_line(result, str(path), "line 3", "no UTC offset", "line 2")


# ---------------------------------------------------------------------------------------------
# reading: delimiters, NA ids, empty columns, duplicate columns


@pytest.mark.parametrize("text", [
    "unique_id;ds;y\n" + "".join(f"a;2021-01-{d:02d};{d}\n" for d in range(1, 9)),
    "sep=;\nunique_id;ds;y\n" + "".join(f"a;2021-01-{d:02d};{d}\n" for d in range(1, 9)),
    "sep=,\nunique_id,ds,y\n" + "".join(f"a,2021-01-{d:02d},{d}\n" for d in range(1, 9)),
], ids=["semicolon", "excel-sep-semicolon", "excel-sep-comma"])
def test_delimiters(tmp_path, text):
    path = write(tmp_path, text)
    series = read_series(path)
    assert series.ids == ["a"] and series.freq == "D"
    np.testing.assert_array_equal(series.values[0], np.arange(1, 9))


def test_excel_sep_line_keeps_line_numbers(tmp_path):
    path = write(tmp_path, "sep=;\nunique_id;ds;y\na;2021-01-01;1\na;2021-01-02;x\n")
    result = cli("train", path, "--out", tmp_path / "run", *FAST)
    error_line(result, str(path), "line 4", "'x'")


def test_empty_id_is_called_empty_but_na_is_an_id(tmp_path):
    path = write(tmp_path, "unique_id,ds,y\nNA,2021-01-01,1\n,2021-01-02,2\n")
    result = cli("train", path, "--out", tmp_path / "run", *FAST)
    error_line(result, str(path), "line 3", "empty series id")


def test_all_empty_target_reported_once(tmp_path):
    body = "".join(f"{s},2021-01-{d:02d},\n" for s in "abc" for d in range(1, 9))
    path = write(tmp_path, "unique_id,ds,y\n" + body)
    result = cli("train", path, "--out", tmp_path / "run", *FAST)
    error_line(result, str(path), "column 'y'", "no values in any row")


def test_series_without_values_listed_in_one_line(tmp_path):
    body = "".join(f"{s},2021-01-{d:02d},{'' if s != 'a' else d}\n" for s in "abc" for d in range(1, 9))
    path = write(tmp_path, "unique_id,ds,y\n" + body)
    result = cli("train", path, "--out", tmp_path / "run", *FAST, "--set", "data.fill=ffill")
    error_line(result, str(path), "2 series have no values", "'b'", "'c'")


def test_duplicate_column_names(tmp_path):
    path = write(tmp_path, "unique_id,ds,y,y\na,2021-01-01,1,2\n")
    result = cli("train", path, "--out", tmp_path / "run", *FAST)
    error_line(result, str(path), "'y'", "more than once")


def test_mixed_type_column_and_huge_numbers_no_warnings(tmp_path):
    rows = [f"{i},2021-01-{(i % 28) + 1:02d},{i}\n" for i in range(200)]
    rows[-1] = "x1,2021-01-01,1e400\n"
    path = write(tmp_path, "unique_id,ds,y\n" + "".join(rows))
    result = cli("train", path, "--out", tmp_path / "run", *FAST)
    error_line(result, str(path), "line 201", "column 'y'", "not a finite number")


def test_daily_data_at_local_midnight_across_dst(tmp_path):
    days = pd.date_range("2021-03-20", periods=14, freq="D", tz="Europe/Berlin")  # +01:00, then +02:00
    path = write(tmp_path, single([t.isoformat() for t in days]))
    series = read_series(path)
    assert series.freq == "D" and series.lengths().tolist() == [14]
    assert [str(t) for t in series.future_times(0, 2)] == ["2021-04-03 00:00:00+02:00",
                                                           "2021-04-04 00:00:00+02:00"]


def test_day_month_order_learnt_at_train_is_used_at_predict(tmp_path):
    days = _grid("2021-01-20", "D", 12)  # 20/01/2021 .. 31/01/2021: day first
    data = write(tmp_path, single([t.strftime("%d/%m/%Y") for t in days]))
    run = tmp_path / "run"
    assert cli("train", data, "--out", run, *FAST).exit_code == 0
    later = write(tmp_path, single([f"{d:02d}/02/2021" for d in range(1, 11)]), name="later.csv")  # ambiguous alone
    out = tmp_path / "forecast.csv"
    result = cli("predict", later, "--model", run, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out)["ds"].tolist() == ["2021-02-11", "2021-02-12"]


# ---------------------------------------------------------------------------------------------
# frequency inference over distinct times (large files) equals the row-by-row inference


def _many(times: pd.DatetimeIndex, n_series: int = 7_000) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """n_series series cut from `times` (each from a different start, every third with a gap),
    sorted by (series, time): more than 65,536 rows over a few dozen distinct times."""
    parts, codes = [], []
    for k in range(n_series):
        part = times[k % 20: k % 20 + 12]
        part = part.delete(5) if k % 3 == 0 else part
        parts.append(part.as_unit("ns").asi8)   # pandas 3 makes date ranges in microseconds
        codes.append(np.full(len(part), k))
    return pd.DatetimeIndex(np.concatenate(parts)), np.concatenate(codes)


@pytest.mark.parametrize("times, names", [pytest.param(_grid(c[1][0], c[1].freqstr or pd.infer_freq(c[1]), 40)
                                                       if c[0] != "mid-month" else
                                                       _grid("2020-01-01", "MS", 40) + pd.Timedelta(days=14),
                                                       [c[2]], id=c[0]) for c in CALENDARS]
                         + [pytest.param(pd.DatetimeIndex([t + pd.Timedelta(weeks=w) for w in range(10) for t in
                                                           _grid("2021-01-04", "D", 4)]), ["B"], id="mon-thu")])
def test_inference_over_distinct_times_equals_row_by_row(monkeypatch, times, names):
    """Mon-Thu weeks: D and B both hold every time, B misses fewer (the Fridays): D is not checked
    row by row."""
    from lstmcast import gridinfer
    times, codes = _many(times)
    n = int(codes[-1]) + 1
    wall = timegrid.WallTimes(times)
    assert len(times) >= 65_536 and wall.distinct() is not None   # the distinct-times path
    checked = []
    fit = gridinfer.fit
    monkeypatch.setattr(gridinfer, "fit", lambda c, *args: checked.append(c) or fit(c, *args))
    fits, tried = gridinfer.infer(wall, codes, n)
    monkeypatch.setattr(gridinfer, "fit", fit)
    assert [f.freq.name for f in fits] == names
    # Every candidate checked row by row, none skipped: the same best fits, positions and all.
    every = {c: gridinfer.fit(c, gridinfer.Rows(wall, codes), n) for c in tried}
    best = min(f.missing for f in every.values() if f is not None)
    assert [(f.freq, f.missing) for f in fits] == [(c, f.missing) for c, f in every.items()
                                                   if f is not None and f.missing == best]
    # Row by row infer checked only the candidates that could be among the best.
    assert all(every[c] is None or every[c].missing == best for c in checked)
    if names == ["B"]:
        assert timegrid.parse_freq("D") in tried and timegrid.parse_freq("D") not in checked
    # The same inference over every row (no distinct times): the same candidates and fits.
    monkeypatch.setattr(timegrid.WallTimes, "distinct", lambda self: None)
    row_fits, row_tried = gridinfer.infer(timegrid.WallTimes(times), codes, n)
    assert row_tried == tried
    assert [(f.freq, f.missing) for f in row_fits] == [(f.freq, f.missing) for f in fits]
    for a, b in zip(row_fits, fits):
        np.testing.assert_array_equal(a.positions, b.positions)


def test_a_column_typed_differently_in_two_blocks_is_read_whole(tmp_path):
    """pandas parses a large CSV in blocks (262,144 rows of 3 columns) and types each column per
    block: a column of numbers in the first block and text in the second is read again in one
    piece, so that each of its values is text, as in a small file."""
    from lstmcast.csvread import _read_table
    n = 300_000
    kind = np.where(np.arange(n) < 280_000, "7", "a")
    frame = pd.DataFrame({"unique_id": "s", "ds": "2021-01-01", "kind": kind})
    path = tmp_path / "mixed.csv"
    frame.to_csv(path, index=False)
    read = _read_table(path, ("unique_id",)).frame
    assert read["kind"].map(type).eq(str).all()
    assert read["kind"].tolist() == kind.tolist()
    frame["kind"] = np.arange(n) * 0.5   # numbers in every block: one float column, no second read
    frame.to_csv(path, index=False)
    assert _read_table(path, ("unique_id",)).frame["kind"].dtype == np.float64


def test_a_time_column_of_numbers_is_named(tmp_path):
    """The time column is parsed as a Categorical of its text: one of numbers only is still told
    apart from dates (an integer step index, or a year written alone)."""
    for times in (range(1, 9), [2017 + i for i in range(8)]):
        path = write(tmp_path, single(list(times)))
        result = cli("train", path, "--out", tmp_path / "run", *FAST)
        error_line(result, str(path), "column 'ds'", "holds numbers, not timestamps")
        assert not (tmp_path / "run").exists()
