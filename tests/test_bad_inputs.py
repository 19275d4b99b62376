"""Bad inputs fail cleanly; good inputs are read right.

Every user mistake must end with exit code 2, exactly one line on stderr starting with
"lstmcast: error:" that names the file and the specific problem, no traceback, and nothing
written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PREFIX, cli, error_line, snapshot

from lstmcast.data import read_series

# ---------------------------------------------------------------------------------------------
# Helpers (cli, error_line, snapshot and PREFIX are shared, in conftest.py).

HEADER = "unique_id,ds,y\n"
FAST = ["--set", "train.epochs=1", "--horizon", "2"]
TINY_MODEL = ["--set", "model.hidden_size=8", "--set", "model.layers=1"]




def rows(sid: str | None, n: int, start: str = "2020-01-01", freq: str = "D", first: float = 1.0) -> str:
    """CSV lines `[sid,]timestamp,value` for n regular steps, values first, first + 1, ..."""
    times = pd.date_range(start, periods=n, freq=freq)
    lead = f"{sid}," if sid is not None else ""
    return "".join(f"{lead}{t},{first + i:g}\n" for i, t in enumerate(times))






def train_bad(tmp_path: Path, text: str | None, *extra: str, name: str = "bad.csv"):
    """Train on a CSV with `text` (None: no file); assert a clean error and nothing written."""
    data = tmp_path / name
    if text is not None:
        data.write_text(text)
    out = tmp_path / "run"
    before = snapshot(tmp_path)
    result = cli("train", data, "--out", out, *FAST, *extra)
    assert not out.exists(), "the run directory was created for a bad input"
    assert snapshot(tmp_path) == before, "files were written for a bad input"
    return data, result


def good_long(n_a: int = 8, n_b: int = 8) -> str:
    return HEADER + rows("a", n_a) + rows("b", n_b, first=10)


# ---------------------------------------------------------------------------------------------
# train: problems with the data file


def test_missing_file(tmp_path):
    data, result = train_bad(tmp_path, None, name="nope.csv")
    error_line(result, str(data), "not found")


def test_empty_file(tmp_path):
    data, result = train_bad(tmp_path, "")
    assert data.stat().st_size == 0
    error_line(result, str(data), "empty")


def test_header_only(tmp_path):
    data, result = train_bad(tmp_path, HEADER)
    error_line(result, str(data), "no data rows")


@pytest.mark.parametrize("option", ["--target", "--id-col", "--time-col"])
def test_missing_named_column(tmp_path, option):
    data, result = train_bad(tmp_path, good_long(), option, "nosuch")
    error_line(result, str(data), "'nosuch'", "unique_id, ds, y", option)


def test_unparseable_timestamp(tmp_path):
    text = HEADER + "a,2020-01-01,1\na,2020-01-02,2\na,2020-13-45,3\na,2020-01-04,4\na,2020-01-05,5\n"
    data, result = train_bad(tmp_path, text)
    error_line(result, str(data), "line 4", "column 'ds'", "2020-13-45")


def test_empty_timestamp(tmp_path):
    text = HEADER + "a,2020-01-01,1\na,2020-01-02,2\na,,3\na,2020-01-04,4\na,2020-01-05,5\n"
    data, result = train_bad(tmp_path, text)
    error_line(result, str(data), "line 4", "column 'ds'", "empty timestamp")


def test_duplicate_rows(tmp_path):
    text = HEADER + "a,2020-01-01,1\na,2020-01-02,2\na,2020-01-03,3\na,2020-01-02,4\na,2020-01-04,5\n"
    data, result = train_bad(tmp_path, text)
    error_line(result, str(data), "duplicate", "line 5", "line 3", "series 'a'", "2020-01-02")


@pytest.mark.parametrize("bad", ["abc", "inf", "-inf"])
def test_non_finite_value(tmp_path, bad):
    text = HEADER + f"a,2020-01-01,1\na,2020-01-02,2\na,2020-01-03,{bad}\na,2020-01-04,4\na,2020-01-05,5\n"
    data, result = train_bad(tmp_path, text)
    error_line(result, str(data), "line 4", "column 'y'", repr(bad), "not a finite number")


def test_mixed_frequencies(tmp_path):
    text = HEADER + rows("daily", 6) + rows("hourly", 6, freq="h")
    data, result = train_bad(tmp_path, text)
    error_line(result, str(data), "mixed frequencies", "'daily'", "'hourly'", "'D'", "'h'")


def test_gap_with_fill_error(tmp_path):
    # Two missing days (01-03 and 01-05) in series 'a'; 'b' is complete.
    text = (HEADER + "a,2020-01-01,1\na,2020-01-02,2\na,2020-01-04,4\na,2020-01-06,6\na,2020-01-07,7\n"
            + rows("b", 7))
    data, result = train_bad(tmp_path, text)
    error_line(result, str(data), "2 missing timestamps", "series 'a' at 2020-01-03",
               "data.fill=ffill|interpolate|zero")


def test_empty_value_with_fill_error(tmp_path):
    text = HEADER + "a,2020-01-01,1\na,2020-01-02,\na,2020-01-03,3\na,2020-01-04,4\na,2020-01-05,5\n"
    data, result = train_bad(tmp_path, text)
    error_line(result, str(data), "1 empty values", "series 'a' at 2020-01-02",
               "data.fill=ffill|interpolate|zero")


def test_series_too_short(tmp_path):
    # horizon 2 -> 2 + 1 = 3 points needed for one training window; 'short' has 2.
    data, result = train_bad(tmp_path, HEADER + rows("long", 8) + rows("short", 2))
    error_line(result, str(data), "series 'short'", "2 points", "at least 3")


def test_no_series_long_enough_to_validate(tmp_path):
    # horizon 2: validation needs 2 x 2 + 1 = 5 points; both series have 4.
    data, result = train_bad(tmp_path, HEADER + rows("a", 4) + rows("b", 4))
    error_line(result, str(data), "5 points", "validation", "--horizon")


def test_several_numeric_columns_without_target(tmp_path):
    text = "ds,alpha,beta\n" + "".join(f"2020-01-0{i},{i},{2 * i}\n" for i in range(1, 9))
    data, result = train_bad(tmp_path, text)
    error_line(result, str(data), "several numeric columns", "alpha, beta", "--target")


def test_no_time_column(tmp_path):
    text = "alpha,beta\n" + "".join(f"{i},{2 * i}\n" for i in range(1, 9))
    data, result = train_bad(tmp_path, text)
    error_line(result, str(data), "no timestamp column", "alpha, beta", "--time-col")


# ---------------------------------------------------------------------------------------------
# train: problems with the config


def test_unknown_set_key(tmp_path):
    _, result = train_bad(tmp_path, good_long(), "--set", "model.nope=1")
    error_line(result, "--set", "'model.nope'", "hidden_size, layers, dropout")


def test_bad_set_value(tmp_path):
    _, result = train_bad(tmp_path, good_long(), "--set", "data.fill=magic")
    error_line(result, "'data.fill'", "error|ffill|interpolate|zero", "'magic'")


def test_zero_epochs(tmp_path):
    _, result = train_bad(tmp_path, good_long(), "--set", "train.epochs=0")
    error_line(result, "'train.epochs'", ">= 1", "0")


@pytest.mark.parametrize("item, key", [
    pytest.param("model.dropout=.nan", "model.dropout", id="dropout-nan"),
    pytest.param("train.lr=.nan", "train.lr", id="lr-nan"),
    pytest.param("train.lr=.inf", "train.lr", id="lr-inf"),
])
def test_non_finite_float_setting(tmp_path, item, key):
    _, result = train_bad(tmp_path, good_long(), "--set", item)
    error_line(result, f"'{key}'")


def test_config_file_with_typo(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("train:\n  epoch: 3\n")
    _, result = train_bad(tmp_path, good_long(), "--config", config)
    error_line(result, str(config), "'train.epoch'", "epochs")


def test_config_file_invalid_yaml(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("train:\n  epochs: [1\n  lr: 2\n")
    _, result = train_bad(tmp_path, good_long(), "--config", config)
    error_line(result, str(config), "not valid YAML")


# ---------------------------------------------------------------------------------------------
# train: the run directory


def test_out_is_existing_nonempty_directory(tmp_path):
    data = tmp_path / "good.csv"
    data.write_text(good_long())
    out = tmp_path / "run"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_bytes(b"precious \x00\xff bytes\n")
    (out / "sub" / "model.pt").write_bytes(b"not really a model")
    before = snapshot(tmp_path)
    result = cli("train", data, "--out", out, *FAST)
    error_line(result, str(out), "already exists", "--resume", "--overwrite")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("existing", [False, True], ids=["missing-dir", "empty-dir"])
def test_resume_without_last_checkpoint(tmp_path, existing):
    data = tmp_path / "good.csv"
    data.write_text(good_long())
    out = tmp_path / "run"
    if existing:
        out.mkdir()
    before = snapshot(tmp_path)
    result = cli("train", data, "--out", out, "--resume", *FAST)
    error_line(result, str(out), "nothing to resume", "last.pt")
    assert snapshot(tmp_path) == before
    assert out.exists() == existing


@pytest.mark.parametrize("content", ["data: [\n", "- 1\n- 2\n"], ids=["invalid-yaml", "not-a-mapping"])
def test_resume_with_unreadable_saved_config(tmp_path, content):
    data = tmp_path / "good.csv"
    data.write_text(good_long())
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(content)
    before = snapshot(tmp_path)
    result = cli("train", data, "--out", out, "--resume", *FAST)
    error_line(result, str(out))
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# train: more bugs found while writing these tests


def test_numeric_time_column(tmp_path):
    text = "year,y\n" + "".join(f"{2000 + i},{i % 3}\n" for i in range(10))
    data, result = train_bad(tmp_path, text, "--time-col", "year")
    error_line(result, str(data), "'year'")


def test_unparseable_first_timestamp_subprocess(tmp_path):
    """A real process: warnings reach stderr there (pytest captures them in-process)."""
    data = tmp_path / "bad.csv"
    data.write_text("ds,y\n2020-13-45,1\n" + rows(None, 6, start="2020-01-02", first=2))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "lstmcast", "train", str(data), "--out", str(out), *FAST],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(PREFIX) and "line 2" in lines[0] and "2020-13-45" in lines[0]


def test_missing_file_subprocess(tmp_path):
    """The same contract holds for a real process (exit status, stderr, no traceback)."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "lstmcast", "train", "nope.csv", "--out", str(out), *FAST],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"{PREFIX}nope.csv: file not found\n"
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# read_series: good inputs are read right


GAP = "a,2020-01-01,1\na,2020-01-02,2\na,2020-01-04,4\na,2020-01-05,8\n"          # 01-03 missing
EMPTY_CELL = "a,2020-01-01,1\na,2020-01-02,2\na,2020-01-03,\na,2020-01-04,4\na,2020-01-05,8\n"


@pytest.mark.parametrize("body", [GAP, EMPTY_CELL], ids=["gap", "empty-cell"])
@pytest.mark.parametrize("fill, filled", [("interpolate", 3.0), ("ffill", 2.0), ("zero", 0.0)])
def test_fill_policies_fill(tmp_path, body, fill, filled):
    path = tmp_path / "holes.csv"
    path.write_text(HEADER + body)
    series = read_series(path, fill=fill)
    assert series.ids == ["a"]  # (the frequency of a gappy daily file: see test_frequency_inference)
    assert series.starts == [pd.Timestamp("2020-01-01")]
    np.testing.assert_allclose(series.values[0], [1.0, 2.0, filled, 4.0, 8.0])


def test_long_format_default_columns(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text(HEADER + rows("b", 5, first=10) + rows("a", 4, start="2020-01-03"))
    series = read_series(path)
    assert series.columns.to_dict() == {"id_col": "unique_id", "time_col": "ds", "targets": ["y"],
                                        "id_in_input": True}
    assert series.ids == ["b", "a"]  # file order
    assert series.freq == "D"
    assert series.lengths().tolist() == [5, 4]
    assert series.starts == [pd.Timestamp("2020-01-01"), pd.Timestamp("2020-01-03")]
    np.testing.assert_array_equal(series.values[0], [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(series.values[1], [1, 2, 3, 4])
    assert all(v.dtype == np.float64 for v in series.values)


def test_file_without_id_column_is_one_series(tmp_path):
    path = tmp_path / "single.csv"
    path.write_text("ds,sales\n" + rows(None, 6))
    series = read_series(path)
    assert series.ids == ["sales"]
    assert series.columns.targets == ("sales",) and not series.columns.id_in_input
    assert series.columns.id_col == "unique_id" and series.columns.time_col == "ds"
    assert series.lengths().tolist() == [6]
    np.testing.assert_array_equal(series.values[0], [1, 2, 3, 4, 5, 6])


def test_wide_file_with_target_list(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("ds,a,b,ignored\n" + "".join(f"2021-03-0{i},{i},{10 * i},0\n" for i in range(1, 7)))
    result = cli("train", path, "--out", tmp_path / "run", "--target", "a,b", "--set", "train.epochs=1",
                 "--horizon", "2", *TINY_MODEL, "-q")
    assert result.exit_code == 0, result.output
    series = read_series(path, target=["a", "b"])
    assert series.ids == ["a", "b"] and series.freq == "D"
    assert series.columns.targets == ("a", "b") and not series.columns.id_in_input
    assert series.lengths().tolist() == [6, 6]
    np.testing.assert_array_equal(series.values[0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(series.values[1], [10, 20, 30, 40, 50, 60])


def test_time_column_detected(tmp_path):
    path = tmp_path / "detect.csv"
    path.write_text("timestamp,value\n" + rows(None, 5, start="2022-05-01 00:00", freq="h"))
    series = read_series(path)
    assert series.columns.time_col == "timestamp" and series.columns.targets == ("value",)
    assert series.ids == ["value"] and series.freq == "h"
    assert series.starts == [pd.Timestamp("2022-05-01 00:00")]
    np.testing.assert_array_equal(series.values[0], [1, 2, 3, 4, 5])


@pytest.mark.parametrize("times, freq, length", [
    pytest.param(["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01"], "MS", 4, id="monthly"),
    pytest.param(["2020-01-30", "2020-01-31", "2020-02-01", "2020-02-02"], "D", 4, id="daily"),
    pytest.param(["2020-01-01 22:00", "2020-01-01 23:00", "2020-01-02 00:00", "2020-01-02 01:00"], "h", 4,
                 id="hourly"),
    pytest.param(["2020-01-01", "2020-02-01", "2020-04-01", "2020-05-01"], "MS", 5, id="monthly-gap"),
    pytest.param(["2020-01-01 00:00", "2020-01-01 01:00", "2020-01-01 04:00", "2020-01-01 05:00"], "h", 6,
                 id="hourly-gaps"),
    pytest.param(["2020-01-01", "2020-01-02", "2020-01-04", "2020-01-05"], "D", 5, id="daily-gap"),
    pytest.param(["2020-01-06", "2020-01-13", "2020-01-27", "2020-02-03"], "W-MON", 5, id="weekly-gap"),
])
def test_frequency_inference(tmp_path, times, freq, length):
    path = tmp_path / "freq.csv"
    path.write_text("ds,y\n" + "".join(f"{t},{i}\n" for i, t in enumerate(times)))
    series = read_series(path, fill="zero")
    assert series.freq == freq
    assert series.lengths().tolist() == [length]
    assert series.starts == [pd.Timestamp(times[0])]
    assert series.last_time(0) == pd.Timestamp(times[-1])


# ---------------------------------------------------------------------------------------------
# predict / evaluate


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data, run directory): a tiny daily model with horizon 2."""
    folder = tmp_path_factory.mktemp("bad_inputs_run")
    data = folder / "train.csv"
    data.write_text(HEADER + rows("a", 12) + rows("b", 12, first=20))
    run = folder / "run"
    result = cli("train", data, "--out", run, *FAST, *TINY_MODEL, "-q")
    assert result.exit_code == 0, result.output
    return data, run


def test_predict_missing_model(tmp_path, trained):
    data, _ = trained
    out = tmp_path / "forecast.csv"
    result = cli("predict", data, "--model", tmp_path / "no_run", "--out", out)
    error_line(result, str(tmp_path / "no_run"), "run directory not found")
    assert not out.exists()


@pytest.mark.parametrize("horizon", [3, 0])
def test_predict_horizon_out_of_range(tmp_path, trained, horizon):
    data, run = trained
    out = tmp_path / "forecast.csv"
    result = cli("predict", data, "--model", run, "--out", out, "--horizon", horizon)
    error_line(result, f"--horizon {horizon}", "1..2")
    assert not out.exists()


def test_predict_other_frequency(tmp_path, trained):
    _, run = trained
    data = tmp_path / "hourly.csv"
    data.write_text(HEADER + rows("a", 12, freq="h"))
    out = tmp_path / "forecast.csv"
    result = cli("predict", data, "--model", run, "--out", out)
    error_line(result, str(data), "'h'", "'D'")
    assert not out.exists()


def test_evaluate_series_too_short(tmp_path, trained):
    _, run = trained
    data = tmp_path / "short.csv"
    data.write_text(HEADER + rows("a", 12) + rows("b", 2, first=20))
    out = tmp_path / "metrics.json"
    result = cli("evaluate", data, "--model", run, "--out", out)
    error_line(result, str(data), "series 'b'", "2 points", "at least 3")
    assert not out.exists()


def test_predict_missing_trained_column(tmp_path, trained):
    _, run = trained
    data = tmp_path / "renamed.csv"
    data.write_text("unique_id,ds,value\n" + rows("a", 12))
    out = tmp_path / "forecast.csv"
    result = cli("predict", data, "--model", run, "--out", out)
    assert not out.exists()
    line = error_line(result, str(data), "'y'")
    assert "--target" not in line


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_out_is_a_directory(tmp_path, trained, command):
    data, run = trained
    out = tmp_path / "a_dir"
    out.mkdir()
    result = cli(command, data, "--model", run, "--out", out)
    error_line(result, str(out))
    assert list(out.iterdir()) == []


def test_evaluate_negative_season_length(trained):
    data, run = trained
    result = cli("evaluate", data, "--model", run, "--season-length", -1)
    error_line(result, "--season-length")


def test_diverged_validation_loss(tmp_path, trained):
    data, _ = trained
    out = tmp_path / "run"
    result = cli("train", data, "--out", out, *FAST, *TINY_MODEL, "--set", "train.lr=1e30")
    # Training had started, so progress lines come first; the error is the last line.
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.stderr.splitlines()[-1]
    assert last.startswith(PREFIX) and "diverged at epoch 1" in last and "train.lr" in last
    assert not out.exists(), "a fresh run that failed must not leave a half-made run directory"


def test_failed_overwrite_leaves_nothing_behind(tmp_path, trained):
    data, run = trained
    out = tmp_path / "run"
    shutil.copytree(run, out)
    before = snapshot(tmp_path)
    # lr 1e30 is a valid setting; epoch 2's training loss is inf -> "training diverged".
    result = cli("train", data, "--out", out, "--overwrite", "--horizon", "2", *TINY_MODEL,
                 "--set", "train.epochs=3", "--set", "train.lr=1e30")
    assert result.exit_code == 2 and PREFIX in result.stderr and "diverged" in result.stderr
    assert snapshot(out) == snapshot(run), "the existing run was changed"
    assert sorted(os.listdir(tmp_path)) == ["run"], "a work directory was left behind"
    assert snapshot(tmp_path) == before


def test_predict_clean_daily_after_training_on_gappy_daily(tmp_path):
    days = [t for t in pd.date_range("2020-01-01", periods=12, freq="D") if t != pd.Timestamp("2020-01-05")]
    gappy = tmp_path / "gappy.csv"
    gappy.write_text("ds,y\n" + "".join(f"{t.date()},{i}\n" for i, t in enumerate(days)))
    clean = tmp_path / "clean.csv"
    clean.write_text("ds,y\n" + rows(None, 12))
    run = tmp_path / "run"
    result = cli("train", gappy, "--out", run, *FAST, *TINY_MODEL, "--set", "data.fill=interpolate", "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "forecast.csv"
    result = cli("predict", clean, "--model", run, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert pd.read_csv(out)["ds"].tolist() == ["2020-01-13", "2020-01-14"]
