"""The automatic recipe and the time budget through the CLI: printed choices, config.yaml that
reproduces the run, what the user sets winning, and a budget that cuts."""

from __future__ import annotations

import json

import torch
import yaml
from conftest import SALES, cli, error_line

from lstmcast.auto import MEMBERS

# Small members so that the test is quick; the recipe still chooses everything else.
SMALL = ["--set", "model.hidden_size=8", "--set", "model.layers=1", "--set", "train.epochs=2",
         "--set", "train.recipe=auto"]


def weights(run) -> list[dict]:
    return torch.load(run / "model.pt", map_location="cpu", weights_only=True)["models"]


def test_the_recipe_is_printed_written_and_reproduced(tmp_path):
    run = tmp_path / "auto"
    # A budget this tiny run never reaches even on a loaded machine (the default 10 minutes cut
    # members when other jobs made an epoch take 11 s), so the clock decides nothing.
    result = cli("train", SALES, "--out", run, *SMALL, "--time-budget", "2h")
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("auto: ")]
    keys = [line.split(" = ")[0].removeprefix("auto: ") for line in lines]
    assert "auto: data.horizon = 18: the M4 convention for monthly data" in lines
    assert {"data.lookback", "train.members", "train.batch_size", "train.patience", "train.select"} <= set(keys)
    assert len(keys) == len(set(keys))                           # each choice said once
    assert "hidden_size" not in "".join(keys) and "train.epochs" not in keys   # given: not chosen
    text = (run / "config.yaml").read_text()
    assert text.startswith("# Chosen by train.recipe auto")
    assert all(f"#   {line.removeprefix('auto: ')}" in text for line in lines)
    saved = yaml.safe_load(text)
    assert saved["data"]["horizon"] == 18 and saved["model"]["hidden_size"] == 8
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["horizon"] == 18 and metrics["recipe"] == [line.removeprefix("auto: ") for line in lines]
    assert metrics["time_budget"]["seconds"] == 7200 and metrics["time_budget"]["cut"] == []
    kept = metrics["selection"]["kept"]
    assert len(metrics["selection"]["member_mase"]) == MEMBERS and 1 <= len(kept) <= MEMBERS
    assert saved["train"]["ensemble"] == len(kept) == len(weights(run))

    # The saved config gives every key: nothing is chosen again, and the same model comes out.
    again = tmp_path / "again"
    result = cli("train", SALES, "--out", again, "--config", run / "config.yaml")
    assert result.exit_code == 0, result.stderr
    assert "auto: " not in result.stderr
    for a, b in zip(weights(run), weights(again), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_what_the_user_sets_wins(tmp_path):
    run = tmp_path / "given"
    result = cli("train", SALES, "--out", run, *SMALL, "--horizon", "6", "--set", "train.loss=mae",
                 "--set", "train.batch_size=32")
    assert result.exit_code == 0, result.stderr
    assert "auto: data.horizon" not in result.stderr and "auto: train.loss" not in result.stderr
    assert "auto: train.batch_size" not in result.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["horizon"] == 6 and saved["train"]["loss"] == "mae"
    assert saved["train"]["batch_size"] == 32
    assert all("train.loss" not in member for member in saved["train"]["members"])
    # Lookbacks 13 (4/3 x horizon, at least a season and one) and 24 (2 seasons); train.select may keep fewer.
    assert {member["data.lookback"] for member in saved["train"]["members"]} <= {13, 24}


def test_plain_recipe_keeps_the_declared_defaults(tmp_path):
    run = tmp_path / "plain"
    result = cli("train", SALES, "--out", run, "--set", "train.recipe=none", "--set", "train.epochs=1",
                 "--set", "model.hidden_size=8")
    assert result.exit_code == 0, result.stderr
    assert "auto: " not in result.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["horizon"] == 12 and saved["train"]["ensemble"] == 1
    assert not (run / "config.yaml").read_text().startswith("#")


def test_a_budget_that_cuts_keeps_what_was_trained_and_records_it(tmp_path):
    run = tmp_path / "cut"
    result = cli("train", SALES, "--out", run, *SMALL, "--time-budget", "1s", "--set", "train.epochs=50")
    assert result.exit_code == 0, result.stderr
    assert "time budget: " in result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["time_budget"]["seconds"] == 1 and metrics["time_budget"]["cut"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    members = saved["train"]["members"]
    assert saved["train"]["ensemble"] == len(members) == len(weights(run)) < MEMBERS
    assert saved["train"]["select"] is False
    assert all(member["train.epochs"] < 50 for member in members)    # the epochs each really ran
    assert [member["train.seed"] for member in members] == list(range(len(members)))
    history = (run / "history.csv").read_text().splitlines()[1:]
    assert max(int(row.split(",")[1]) for row in history) < 50
    # What was kept forecasts.
    predicted = cli("predict", SALES, "--model", run, "--out", tmp_path / "f.csv")
    assert predicted.exit_code == 0, predicted.stderr


def test_bad_budgets_are_one_line(tmp_path):
    error_line(cli("train", SALES, "--out", tmp_path / "r", "--time-budget", "soon"),
               "train.time_budget", "10m")
    error_line(cli("train", SALES, "--out", tmp_path / "r", "--set", "train.time_budget=-3"),
               "train.time_budget", "positive")
