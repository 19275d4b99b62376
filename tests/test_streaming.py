"""Predict in bounded memory: series streamed through in chunks, read and written as they go, the
output the same bytes whatever the chunk; Parquet outputs; files that cannot be streamed."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from conftest import SALES, TINY, error_line, run_cli

from lstmcast import stream
from lstmcast.outputs import csv_text
from lstmcast.predict import Written, predict
from lstmcast.stream import TimeFormat

pytest.importorskip("pyarrow")  # the dev extra installs it; the 'parquet' extra for users
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_reads(monkeypatch):
    """Read 5 rows at a time: every series is cut across reads."""
    monkeypatch.setattr(stream, "READ_ROWS", 5)


def predicted(data, run, out, *extra) -> bytes:
    result = run_cli("predict", data, "--model", run, "--out", out, *extra)
    assert result.exit_code == 0, result.stderr
    return out.read_bytes()


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.usefixtures("small_reads")
@pytest.mark.parametrize("extra", [(), ("--shard", "1/3", "--horizon", "5")])
def test_any_chunk_writes_the_same_bytes(sales_run, tmp_path, extra):
    whole = predicted(SALES, sales_run, tmp_path / "whole.csv", "--chunk-series", "0", *extra)
    for chunk in ("1", "2", "7"):
        assert predicted(SALES, sales_run, tmp_path / f"c{chunk}.csv", "--chunk-series", chunk, *extra) == whole
    assert predicted(SALES, sales_run, tmp_path / "default.csv", *extra) == whole
    assert whole.count(b"\n") > 1 and not leftovers(tmp_path)


@pytest.mark.usefixtures("small_reads")
def test_quantile_forecasts_stream_alike(quantile_run, tmp_path):
    whole = predicted(SALES, quantile_run, tmp_path / "whole.csv", "--chunk-series", "0")
    assert whole.startswith(b"unique_id,ds,forecast,q_0.1,q_0.5,q_0.9\n")
    assert predicted(SALES, quantile_run, tmp_path / "c2.csv", "--chunk-series", "2") == whole


@pytest.mark.usefixtures("small_reads")
def test_parquet_inputs_stream_like_the_csv(sales_run, tmp_path):
    frame = pd.read_csv(SALES)
    frame.to_parquet(tmp_path / "sales.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.iloc[:500].to_parquet(folder / "a.parquet")
    frame.iloc[500:].to_parquet(folder / "b.parquet")
    whole = predicted(SALES, sales_run, tmp_path / "csv.csv", "--chunk-series", "0")
    assert predicted(tmp_path / "sales.parquet", sales_run, tmp_path / "p.csv", "--chunk-series", "3") == whole
    assert predicted(folder, sales_run, tmp_path / "f.csv", "--chunk-series", "5") == whole


def test_parquet_output_is_the_csv_output(quantile_run, tmp_path):
    csv_out, parquet_out = tmp_path / "f.csv", tmp_path / "f.parquet"
    predicted(SALES, quantile_run, csv_out, "--chunk-series", "5")
    result = run_cli("predict", SALES, "--model", quantile_run, "--out", parquet_out, "--chunk-series", "5")
    assert result.exit_code == 0, result.stderr
    assert "wrote 144 forecasts (12 series x 12 steps)" in result.stderr
    back = pd.read_parquet(parquet_out)
    assert pd.api.types.is_datetime64_dtype(back["ds"])
    assert all(back[c].dtype == np.float64 for c in ["forecast", "q_0.1", "q_0.5", "q_0.9"])
    assert all(isinstance(i, str) for i in back["unique_id"])
    expected = pd.read_csv(csv_out, dtype={"unique_id": str})
    expected["ds"] = pd.to_datetime(expected["ds"]).astype(back["ds"].dtype)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert back["unique_id"].tolist() == expected["unique_id"].tolist()
    assert csv_text(back) == csv_out.read_text()          # the same numbers, to the last bit
    assert not leftovers(tmp_path)


def test_parquet_output_never_replaces_its_input(sales_run, tmp_path):
    data = tmp_path / "sales.parquet"
    pd.read_csv(SALES).to_parquet(data)
    before = data.read_bytes()
    error_line(run_cli("predict", data, "--model", sales_run, "--out", data), "is also an input")
    assert data.read_bytes() == before


def test_parquet_output_without_pyarrow_is_one_line(sales_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)     # import pyarrow raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "f.parquet"
    error_line(run_cli("predict", SALES, "--model", sales_run, "--out", out), str(out),
               "pip install 'lstmcast[parquet]'")
    assert not out.exists() and not leftovers(tmp_path)


def test_a_file_not_grouped_by_series_is_read_whole(sales_run, tmp_path):
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(SALES, dtype=str).sample(frac=1.0, random_state=0).to_csv(shuffled, index=False)
    whole = predicted(shuffled, sales_run, tmp_path / "whole.csv", "--chunk-series", "0")
    result = run_cli("predict", shuffled, "--model", sales_run, "--out", tmp_path / "c.csv", "--chunk-series", "2")
    assert result.exit_code == 0, result.stderr
    note, wrote = result.stderr.strip().splitlines()
    assert "comes again at line" in note and "in one piece" in note and "group each series" in note
    assert wrote.startswith("wrote 144 forecasts")
    assert (tmp_path / "c.csv").read_bytes() == whole
    quiet = run_cli("predict", shuffled, "--model", sales_run, "--out", tmp_path / "q.csv", "--chunk-series", "2",
                    "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def _with(tmp_path, name: str, line: int, column: str, value: str):
    """The sample with the cell of `column` at file line `line` (header: line 1) replaced."""
    frame = pd.read_csv(SALES, dtype=str)
    frame.loc[line - 2, column] = value
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.mark.usefixtures("small_reads")
def test_an_error_in_a_later_chunk_names_its_line_and_leaves_the_old_output(sales_run, tmp_path):
    out = tmp_path / "f.csv"
    old = predicted(SALES, sales_run, out)
    last = len(pd.read_csv(SALES)) + 1                    # the file's last line
    bad = _with(tmp_path, "bad.csv", last - 3, "y", "abc")
    error_line(run_cli("predict", bad, "--model", sales_run, "--out", out, "--chunk-series", "2"),
               f"bad.csv line {last - 3}", "column 'y'", "'abc'")
    assert out.read_bytes() == old and leftovers(tmp_path) == []
    off_grid = _with(tmp_path, "grid.csv", last, "ds", "2030-06-15")
    error_line(run_cli("predict", off_grid, "--model", sales_run, "--out", out, "--chunk-series", "2"),
               "grid.csv", "trained on 'MS' data", "2030-06-15")
    assert out.read_bytes() == old and leftovers(tmp_path) == []


def test_csv_line_numbers_count_a_sep_line(sales_run, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "READ_ROWS", 7)
    frame = pd.read_csv(SALES, dtype=str)
    frame.loc[len(frame) - 1, "y"] = "n/a?"
    data = tmp_path / "excel.csv"
    data.write_text("sep=;\n" + frame.to_csv(index=False, sep=";"))
    error_line(run_cli("predict", data, "--model", sales_run, "--out", tmp_path / "f.csv", "--chunk-series", "1"),
               f"excel.csv line {len(frame) + 2}", "'n/a?'")


def test_python_api_returns_what_it_wrote(sales_run, tmp_path):
    written = predict(SALES, sales_run, tmp_path / "f.csv", chunk_series=4)
    assert written == Written(tmp_path / "f.csv", 144, 12, 12)
    frame = predict(SALES, sales_run)
    assert csv_text(frame).encode() == (tmp_path / "f.csv").read_bytes()
    with pytest.raises(Exception, match="--chunk-series -1"):
        predict(SALES, sales_run, tmp_path / "g.csv", chunk_series=-1)


def test_parts_written_in_the_format_of_the_whole():
    """Dates alone while every time is midnight, then a time of day: each part is written with
    the kinds of time seen so far, which predict's restart makes all of them."""
    times = pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-03 06:00", "2020-01-04 00:00:00.5"], format="ISO8601")
    frame = pd.DataFrame({"id": list("abcd"), "ds": times, "forecast": [1.0, 2.0, 3.0, 4.0]})
    kinds = TimeFormat()
    assert kinds.add(times[:2]) and not kinds.add(times[:1])
    assert kinds.add(times) and not kinds.add(times[2:])
    parts = [csv_text(frame.iloc[k:k + 1], header=k == 0, times={"ds": kinds.shown()}) for k in range(4)]
    assert "".join(parts) == frame.to_csv(index=False)
    assert csv_text(frame.iloc[:1]) != parts[0]           # alone, the first part is dates only


def test_evaluate_reports_the_same_whatever_the_chunk(quantile_run, tmp_path):
    reports = {}
    for chunk in ("0", "1", "5"):
        out = tmp_path / f"m{chunk}.json"
        result = run_cli("evaluate", SALES, "--model", quantile_run, "--out", out, "--windows", "2",
                         "--chunk-series", chunk)
        assert result.exit_code == 0, result.stderr
        reports[chunk] = out.read_text().replace(str(out), "")
    assert reports["1"] == reports["0"] and reports["5"] == reports["0"]
    assert '"intervals"' in reports["0"] and '"n_series": 12' in reports["0"]


def test_evaluate_reads_a_file_not_grouped_by_series_whole(sales_run, tmp_path):
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(SALES, dtype=str).sample(frac=1.0, random_state=1).to_csv(shuffled, index=False)
    whole = run_cli("evaluate", shuffled, "--model", sales_run, "--out", tmp_path / "w.json", "--chunk-series", "0")
    parts = run_cli("evaluate", shuffled, "--model", sales_run, "--out", tmp_path / "p.json", "--chunk-series", "3")
    assert whole.exit_code == 0 and parts.exit_code == 0, parts.stderr
    assert "comes again at line" in parts.stderr and "comes again" not in whole.stderr
    assert (tmp_path / "w.json").read_text() == (tmp_path / "p.json").read_text()


def test_a_later_chunk_with_times_of_day_rewrites_the_dates(tmp_path):
    """Hourly series; the first ends at 23:00, so its one-step forecast is at midnight and, alone,
    would be written as a date: the later chunks' times of day make every chunk write the time."""
    ends = {"a": "2020-01-02 23:00", "b": "2020-01-02 17:00", "c": "2020-01-03 05:00"}
    frames = [pd.DataFrame({"unique_id": sid, "ds": pd.date_range(end=end, periods=30, freq="h"),
                            "y": np.sin(np.arange(30) / 3) + k}) for k, (sid, end) in enumerate(ends.items())]
    data = tmp_path / "hourly.csv"
    pd.concat(frames).to_csv(data, index=False)
    run = tmp_path / "run"
    trained = run_cli("train", data, "--out", run, "--horizon", "1", "--set", "train.epochs=1",
                      "--set", "data.lookback=4", "--set", "data.calendar=none", *TINY)
    assert trained.exit_code == 0, trained.stderr
    whole = predicted(data, run, tmp_path / "whole.csv", "--chunk-series", "0")
    assert b"\na,2020-01-03 00:00:00," in whole
    assert predicted(data, run, tmp_path / "c1.csv", "--chunk-series", "1") == whole   # written twice
