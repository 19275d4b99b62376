"""One source of truth: every config key is declared once in lstmcast/keys.py (default, rules,
description, member / resumable, named option); configs/default.yaml, MEMBER_KEYS,
RESUMABLE_KEYS, the CLI's option -> key map and the choice lists are derived from it."""

import importlib
from pathlib import Path

import typer
import yaml

from lstmcast import cells, classical, config, data, device, losses, precision, scaling
from lstmcast.cli import app
from lstmcast.config import Config, declared, default_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_is_generated_from_the_declarations():
    committed = (ROOT / "configs" / "default.yaml").read_text(encoding="utf-8")
    assert committed == default_yaml(), "configs/default.yaml is out of date: run `make default-config`"
    assert yaml.safe_load(committed) == Config().to_dict()


def test_every_key_has_a_one_line_description_as_its_comment():
    lines = (ROOT / "configs" / "default.yaml").read_text(encoding="utf-8").splitlines()
    for key, f in declared().items():
        doc = f.metadata["doc"]
        assert doc and "\n" not in doc and doc == doc.strip(), key
        name = key.partition(".")[2]
        line = next(line for line in lines if line.startswith(f"  {name}: "))
        assert line.split("  # ", 1)[1] == doc


def test_member_and_resumable_keys_are_the_declared_ones():
    # The sets the hand-written lists held before they were derived: a declaration change shows here.
    assert set(config.MEMBER_KEYS) == {
        "data.lookback", "model.hidden_size", "model.layers", "model.dropout", "model.window_norm", "model.cell",
        "model.bidirectional", "model.attention", "model.linear_skip", "train.loss", "train.lr",
        "train.weight_decay", "train.batch_size", "train.clip", "train.epochs", "train.patience",
        "train.lr_patience", "train.lr_factor", "train.max_windows_per_series", "train.refit_epochs",
        "train.seed", "train.schedule", "train.windows_per_epoch"}
    assert importlib.import_module("lstmcast.preflight").RESUMABLE_KEYS is config.RESUMABLE_KEYS
    assert config.RESUMABLE_KEYS == {"train.epochs", "train.patience", "train.device", "train.time_budget",
                                     "train.recipe", "train.buffer"}
    assert list(config.MEMBER_KEYS) == [k for k, f in declared().items() if f.metadata["member"]]


def test_train_options_are_the_declared_ones():
    command = typer.main.get_command(app).commands["train"]
    options = {opt: param.name for param in command.params for opt in param.opts if opt.startswith("--")}
    for option, key in config.OPTION_KEYS.items():
        assert key in declared()
        assert option in options, option
        assert options[option] == option.removeprefix("--").replace("-", "_"), option
    # Every other option of train is not a config key.
    others = {"--out", "--config", "--set", "--resume", "--overwrite", "--quiet"}
    assert set(options) == set(config.OPTION_KEYS) | others
    assert config.OPTION_KEYS == {
        "--id-col": "data.id_col", "--time-col": "data.time_col", "--target": "data.target",
        "--horizon": "data.horizon", "--freq": "data.freq", "--lookback": "data.lookback",
        "--device": "train.device", "--seed": "train.seed", "--quantiles": "model.quantiles",
        "--time-budget": "train.time_budget",
        "--past-covariates": "data.past_covariates", "--future-covariates": "data.future_covariates",
        "--grid-cols": "data.grid"}


def test_each_choice_list_is_one_list():
    choices = {key: f.metadata["choices"] for key, f in declared().items() if f.metadata["choices"]}
    assert choices["data.fill"] is data.FILL_POLICIES is config.FILL_POLICIES
    assert choices["data.scaling"] is scaling.METHODS is config.SCALINGS
    assert choices["data.calendar"] is config.CALENDARS
    assert choices["model.window_norm"] is config.WINDOW_NORMS
    assert choices["model.cell"] is cells.CELLS is config.CELLS
    assert choices["train.loss"] is config.LOSSES
    assert (*losses.POINT_LOSSES, "mase") == config.LOSSES
    assert choices["train.precision"] is precision.PRECISIONS is config.PRECISIONS
    assert choices["train.device"] is device.DEVICES is config.DEVICES
    assert choices["train.recipe"] is config.RECIPES and choices["train.schedule"] is config.SCHEDULES
    assert choices["model.classical"] is config.CLASSICAL is classical.METHODS
    assert choices["train.buffer"] is config.BUFFERS
    assert set(choices) == {"data.fill", "data.scaling", "data.calendar", "model.window_norm", "model.cell",
                            "train.loss", "train.precision", "train.device", "train.recipe", "train.schedule",
                            "model.classical", "train.buffer"}
