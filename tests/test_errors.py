"""Config files, model files, memory, huge values and stray warnings fail cleanly.

Every user mistake ends with exit code 2, exactly one stderr line starting with "lstmcast: error:"
that names the file or key and says what to do, no traceback, and nothing written or changed.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
from conftest import PREFIX, cli, error_line, snapshot

from lstmcast import cli as cli_module
from lstmcast.config import load_config, safe_load

# ---------------------------------------------------------------------------------------------
# Helpers (cli, error_line, snapshot and PREFIX are shared, in conftest.py).

ROOT = Path(__file__).resolve().parents[1]
SALES = ROOT / "sample_data" / "sales_monthly.csv"
HEADER = "unique_id,ds,y\n"
FAST = ["--set", "train.epochs=1", "--horizon", "2"]
TINY_MODEL = ["--set", "model.hidden_size=8", "--set", "model.layers=1"]




def rows(sid: str | None, n: int, start: str = "2020-01-01", freq: str = "D", first: float = 1.0,
         step: float = 1.0) -> str:
    """CSV lines `[sid,]timestamp,value` for n regular steps, values first, first + step, ..."""
    times = pd.date_range(start, periods=n, freq=freq)
    lead = f"{sid}," if sid is not None else ""
    return "".join(f"{lead}{t},{first + i * step:g}\n" for i, t in enumerate(times))






def good_long() -> str:
    return HEADER + rows("a", 8) + rows("b", 8, first=10)


def train_bad(tmp_path: Path, *extra, text: str | None = None):
    """Train on a good (or `text`) CSV with `extra` arguments; assert nothing was written."""
    data = tmp_path / "data.csv"
    data.write_text(text if text is not None else good_long())
    out = tmp_path / "run"
    before = snapshot(tmp_path)
    result = cli("train", data, "--out", out, *FAST, *TINY_MODEL, *extra)
    assert not out.exists(), "the run directory was created for a bad input"
    assert snapshot(tmp_path) == before, "files were written for a bad input"
    return result


# ---------------------------------------------------------------------------------------------
# --config files


def test_config_not_utf8(tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("train:\n  epochs: 1   # café\n".encode("latin-1"))
    line = error_line(train_bad(tmp_path, "--config", config), str(config), "line 2", "not UTF-8", "0xe9")
    assert "save the config file as UTF-8" in line


def test_config_is_a_directory(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    line = error_line(train_bad(tmp_path, "--config", folder), str(folder), "is a directory")
    assert "not found" not in line


def test_config_missing_still_says_not_found(tmp_path):
    missing = tmp_path / "nope.yaml"
    error_line(train_bad(tmp_path, "--config", missing), str(missing), "not found")


@pytest.mark.parametrize("text, key, line, first", [
    pytest.param("train:\n  epochs: 1\n  lr: 0.01\n  epochs: 2\n", "epochs", 4, 2, id="key-in-section"),
    pytest.param("data:\n  horizon: 2\ntrain:\n  epochs: 1\ndata:\n  fill: zero\n", "data", 5, 1, id="section"),
    pytest.param("train: {epochs: 1, epochs: 2}\n", "epochs", 1, 1, id="flow-mapping"),
])
def test_config_duplicate_key(tmp_path, text, key, line, first):
    config = tmp_path / "dup.yaml"
    config.write_text(text)
    error_line(train_bad(tmp_path, "--config", config), f"{config} line {line}", f"key '{key}' is given twice",
               f"first on line {first}", "keep one")


def test_set_value_with_duplicate_key(tmp_path):
    result = train_bad(tmp_path, "--set", "train.ensemble=2", "--set",
                       "train.members=[{model.layers: 1, model.layers: 2}]")
    error_line(result, "--set", "'model.layers' is given twice")


def test_yaml_merge_keys_may_still_be_overridden():
    # `<<` merges defaults that the mapping's own keys override: that is YAML, not a duplicate.
    tree = safe_load("base: &b {epochs: 1, lr: 0.1}\ntrain:\n  <<: *b\n  epochs: 3\n")
    assert tree["train"] == {"epochs": 3, "lr": 0.1}


def test_config_without_duplicates_still_loads(tmp_path):
    config = tmp_path / "ok.yaml"
    config.write_text("train:\n  epochs: 2\nmodel:\n  layers: 1\n")
    loaded = load_config(config)
    assert (loaded.train.epochs, loaded.model.layers) == (2, 1)


# ---------------------------------------------------------------------------------------------
# A trained run and files from other runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data, run, other run): tiny daily models with horizon 2, hidden sizes 8 and 4."""
    folder = tmp_path_factory.mktemp("errors_run")
    data = folder / "train.csv"
    data.write_text(HEADER + rows("a", 12) + rows("b", 12, first=20))
    run, other = folder / "run", folder / "other"
    for out, hidden in ((run, 8), (other, 4)):
        result = cli("train", data, "--out", out, *FAST, "--set", f"model.hidden_size={hidden}",
                     "--set", "model.layers=1", "-q")
        assert result.exit_code == 0, result.output
    return data, run, other


def copy_run(tmp_path: Path, run: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def assert_predict_and_evaluate_fail(tmp_path: Path, data: Path, run: Path, *fragments: str) -> None:
    """predict and evaluate both fail cleanly, naming `fragments`, and write nothing."""
    before = snapshot(tmp_path)
    for command in ("predict", "evaluate"):
        out = tmp_path / f"{command}.out"
        error_line(cli(command, data, "--model", run, "--out", out), *fragments)
        assert not out.exists()
    assert snapshot(tmp_path) == before


def test_resume_with_non_utf8_saved_config(tmp_path, trained):
    data, run, _ = trained
    copy = copy_run(tmp_path, run)
    (copy / "config.yaml").write_bytes(b"data:\n  horizon: 2  # \xff\n")
    before = snapshot(tmp_path)
    result = cli("train", data, "--out", copy, "--resume", *FAST)
    error_line(result, str(copy / "config.yaml"), "line 2", "not UTF-8", "cannot be resumed", "--overwrite")
    assert snapshot(tmp_path) == before


def test_predict_with_non_utf8_saved_config(tmp_path, trained):
    data, run, _ = trained
    copy = copy_run(tmp_path, run)
    (copy / "config.yaml").write_bytes(b"\xff\xfe")
    assert_predict_and_evaluate_fail(tmp_path, data, copy, str(copy / "config.yaml"), "not UTF-8")


def test_model_copied_from_another_run(tmp_path, trained):
    data, run, other = trained
    copy = copy_run(tmp_path, run)
    shutil.copy(other / "model.pt", copy / "model.pt")
    assert_predict_and_evaluate_fail(tmp_path, data, copy, f"{copy / 'model.pt'}: does not match",
                                     "model.hidden_size is 4 in model.pt, 8 in config.yaml", "retrain")


def edit_checkpoint(run: Path, edit) -> None:
    payload = torch.load(run / "model.pt", weights_only=True)
    torch.save(edit(payload), run / "model.pt")


def weights_of(run: Path) -> list[dict]:
    return torch.load(run / "model.pt", weights_only=True)["models"]


def drop_first_weight(payload: dict) -> dict:
    state = dict(payload["models"][0])
    del state[next(iter(state))]
    return {**payload, "models": [state]}


@pytest.mark.parametrize("case, fragments", [
    pytest.param("other-weights", ["does not match its config", "shape of", "the config needs"], id="shapes"),
    pytest.param("truncated", ["does not match its config", "missing encoder."], id="missing-weight"),
    pytest.param("no-scaler", ["not a complete lstmcast checkpoint", "missing scaler"], id="missing-entry"),
    pytest.param("no-models", ["holds no trained weights"], id="no-members"),
])
def test_model_not_matching_its_config(tmp_path, trained, case, fragments):
    data, run, other = trained
    copy = copy_run(tmp_path, run)
    edits = {
        "other-weights": lambda p: {**p, "models": weights_of(other)},
        "truncated": drop_first_weight,
        "no-scaler": lambda p: {k: v for k, v in p.items() if k != "scaler"},
        "no-models": lambda p: {**p, "models": []},
    }
    edit_checkpoint(copy, edits[case])
    assert_predict_and_evaluate_fail(tmp_path, data, copy, str(copy / "model.pt"), *fragments, "retrain")


def test_predict_with_the_runs_own_files_still_works(tmp_path, trained):
    data, run, _ = trained
    out = tmp_path / "forecast.csv"
    result = cli("predict", data, "--model", run, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 4


# ---------------------------------------------------------------------------------------------
# Lookbacks: memory and series length


def test_lookback_too_large_for_memory(tmp_path):
    line = error_line(train_bad(tmp_path, "--lookback", 10 ** 12), "lookback 1000000000000 needs ~", "GiB",
                      "of available memory", "lower --lookback")
    assert "3 x horizon" not in line


def test_horizon_too_large_for_memory(tmp_path):
    error_line(train_bad(tmp_path, "--horizon", 10 ** 11), "(3 x horizon 100000000000)", "lower --horizon")


def test_memory_check_against_a_small_machine(tmp_path, monkeypatch):
    # 1 MiB available: lookback 5000 needs ~5 MiB (a batch of 64 windows of 5002 rows, 16 bytes each).
    monkeypatch.setattr(importlib.import_module("lstmcast.preflight"), "available_memory", lambda: 1024 ** 2)
    text = HEADER + "".join(rows(f"s{k}", 6000) for k in range(2))
    error_line(train_bad(tmp_path, "--lookback", 5000, text=text), "lookback 5000 needs ~",
               "this machine's 0.000977 GiB")


def test_lookback_longer_than_every_series(tmp_path):
    error_line(train_bad(tmp_path, "--lookback", 50), "data.csv", "lookback 50 is longer than the longest "
               "series ('a', 8 points)", "lower --lookback to at most 8")


def test_ensemble_lookback_longer_than_every_series(tmp_path):
    line = error_line(train_bad(tmp_path, "--set", "train.ensemble=2", "--set", "train.ensemble_lookbacks=[4,30]"),
                      "lookback 30", "at most 8")
    assert "train.ensemble_lookbacks" in line


def test_default_lookback_longer_than_series_is_padded(tmp_path):
    # horizon 3: the default lookback 9 exceeds the 8-point series; they are left-padded (docs/data.md).
    data = tmp_path / "data.csv"
    data.write_text(good_long())
    result = cli("train", data, "--out", tmp_path / "run", "--horizon", 3, "--set", "train.epochs=1",
                 *TINY_MODEL, "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    # Its saved config has lookback 9 written out: --resume must not take that for the user's.
    resumed = cli("train", data, "--out", tmp_path / "run", "--horizon", 3, "--set", "train.epochs=2",
                  *TINY_MODEL, "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output


# ---------------------------------------------------------------------------------------------
# Values too large to compute with


@pytest.mark.parametrize("first, scaling, fragments", [
    pytest.param(1.7e308, "standard", ["1.7e+308", "above 1e+100", "divide the column"], id="near-float-max"),
    pytest.param(1e200, "robust", ["1e+200", "data.scaling=robust"], id="robust"),
    pytest.param(1e20, "none", ["1e+20", "data.scaling=none", "use data.scaling=standard"], id="unscaled"),
])
def test_values_too_large(tmp_path, first, scaling, fragments):
    text = HEADER + rows("a", 8) + rows("big", 8, first=first, step=-first / 100)
    result = train_bad(tmp_path, "--set", f"data.scaling={scaling}", text=text)
    error_line(result, "data.csv", "series 'big'", "too large", *fragments)


def test_predict_values_too_large(tmp_path, trained):
    _, run, _ = trained
    data = tmp_path / "huge.csv"
    data.write_text(HEADER + rows("a", 12, first=1e300))
    out = tmp_path / "forecast.csv"
    error_line(cli("predict", data, "--model", run, "--out", out), str(data), "series 'a'", "too large")
    assert not out.exists()


def test_large_but_computable_values_train_without_warnings(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(HEADER + rows("a", 8, first=1e90, step=1e88) + rows("b", 8, first=1e95, step=1e93))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning would fail the run
        result = cli("train", data, "--out", tmp_path / "run", *FAST, *TINY_MODEL)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr.lower()


# ---------------------------------------------------------------------------------------------
# Advice that fits the config


def test_divergence_advice_with_standard_scaling(tmp_path, trained):
    data, _, _ = trained
    result = cli("train", data, "--out", tmp_path / "run", *FAST, *TINY_MODEL, "--set", "train.lr=1e30")
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.stderr.splitlines()[-1]
    assert last.startswith(PREFIX) and "diverged" in last and "lower train.lr (now 1e+30)" in last
    assert "data.scaling" not in last, "scaling already is standard: advising it is wrong"


def test_divergence_advice_with_other_scaling(tmp_path, trained):
    data, _, _ = trained
    result = cli("train", data, "--out", tmp_path / "run", *FAST, *TINY_MODEL, "--set", "train.lr=1e30",
                 "--set", "data.scaling=minmax")
    assert result.exit_code == 2
    last = result.stderr.splitlines()[-1]
    assert "lower train.lr (now 1e+30) or use data.scaling=standard (now minmax)" in last


def test_interrupted_predict_does_not_advise_resume(capsys):
    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(typer.Exit) as exit_:
        cli_module._guard(interrupted)
    assert exit_.value.exit_code == 130
    assert capsys.readouterr().err == "lstmcast: error: interrupted\n"


# ---------------------------------------------------------------------------------------------
# predict / train options and values (one line each)


@pytest.mark.parametrize("args, fragments", [
    pytest.param(["--set", "train.epochs=abc"], ["'train.epochs'", "must be int", "'abc'"], id="set-type"),
    pytest.param(["--set", "model.quantiles=[0.1,0.1]"], ["'model.quantiles'", "listed twice"], id="set-twice"),
    pytest.param(["--set", "nosection"], ["--set 'nosection'", "key=value"], id="set-no-equals"),
    pytest.param(["--set", "train.epoch=3"], ["'train.epoch'", "epochs"], id="set-typo"),
    pytest.param(["--lookback", "0"], ["'data.lookback'", ">= 1"], id="lookback-zero"),
    pytest.param(["--quantiles", "0.1,1.5"], ["'model.quantiles'", "strictly between 0 and 1"], id="quantile"),
])
def test_train_bad_values(tmp_path, args, fragments):
    error_line(train_bad(tmp_path, *args), *fragments)


@pytest.mark.parametrize("horizon", [3, 0, -1])
def test_predict_horizon_out_of_range(tmp_path, trained, horizon):
    data, run, _ = trained
    out = tmp_path / "forecast.csv"
    error_line(cli("predict", data, "--model", run, "--out", out, "--horizon", horizon),
               f"--horizon {horizon}", "1..2")
    assert not out.exists()


@pytest.mark.parametrize("args, fragments", [
    pytest.param(["--horizon", "abc"], ["'--horizon'", "integer", "predict --help"], id="not-an-int"),
    pytest.param(["--bogus", "1"], ["No such option: --bogus"], id="unknown-option"),
])
def test_command_line_mistakes_are_one_line(tmp_path, args, fragments):
    # The real console entry point (cli.main): the option parser's errors, not a framed box.
    out = tmp_path / "forecast.csv"
    done = subprocess.run([sys.executable, "-m", "lstmcast", "predict", str(SALES), "--model", str(tmp_path),
                           "--out", str(out), *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), done.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# No stray warnings


def test_normal_run_prints_no_warnings(tmp_path):
    out = tmp_path / "run"
    results = [cli("train", SALES, "--out", out, "--set", "train.epochs=1", *TINY_MODEL),
               cli("predict", SALES, "--model", out, "--out", tmp_path / "forecast.csv"),
               cli("evaluate", SALES, "--model", out, "--out", tmp_path / "metrics.json")]
    for result in results:
        assert result.exit_code == 0, result.output
        # A 1-epoch tiny model may lose to seasonal naive and is meant to say so; nothing else warns.
        stray = [line for line in result.stderr.lower().splitlines()
                 if "warning" in line and "worse than seasonal naive" not in line]
        assert not stray, result.stderr


def test_leftover_warning_is_one_line(capsys):
    def noisy():
        warnings.warn("something odd\nover two lines", RuntimeWarning, stacklevel=1)
        warnings.warn("another", UserWarning, stacklevel=1)
        return 7
    assert cli_module._guard(noisy) == 7
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("lstmcast: warning: RuntimeWarning from "), err
    assert "something odd over two lines (and 1 more)" in err[0]


def test_user_error_hides_leftover_warnings(capsys):
    from lstmcast.errors import LstmcastError

    def noisy_then_wrong():
        warnings.warn("noise", RuntimeWarning, stacklevel=1)
        raise LstmcastError("x.csv: wrong")
    with pytest.raises(typer.Exit):
        cli_module._guard(noisy_then_wrong)
    assert capsys.readouterr().err == "lstmcast: error: x.csv: wrong\n"
