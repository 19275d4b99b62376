"""Scores say what they are: evaluate counts the points the run trained, early-stopped or calibrated
on; metrics.json names its validation scores; conformal calibration uses windows that neither
trained the model nor chose its epoch; refit starts a fresh optimizer; biases are not decayed."""

from __future__ import annotations

import importlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SALES, TINY, run_cli

from lstmcast.checkpoint import FORMAT_VERSION, load_checkpoint
from lstmcast.config import load_config
from lstmcast.evaluate import evaluate
from lstmcast.model import Ensemble, Forecaster
from lstmcast.predict import load_run, read_for_run
from lstmcast.train import (
    calibrate,
    calibration_starts,
    make_optimizer,
    parameter_groups,
    split_parts,
    stopping_starts,
    train,
)
from lstmcast.windows import SeriesBuffer

train_module = importlib.import_module("lstmcast.train")   # lstmcast.train is also the function
CONFORMAL = ["--quantiles", "0.1,0.5,0.9", "--set", "model.conformal=true", "--set", "data.calendar=none"]


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("note:")]


@pytest.fixture(scope="module")
def cut_file(tmp_path_factory):
    """The monthly sample without the last 12 months of each series (2024)."""
    path = tmp_path_factory.mktemp("data") / "cut.csv"
    pd.read_csv(SALES).groupby("unique_id").head(-12).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory, cut_file):
    """Quantiles with conformal calibration, trained on the cut file."""
    out = tmp_path_factory.mktemp("runs") / "cut"
    result = run_cli("train", cut_file, "--out", out, *TINY, *CONFORMAL, "--set", "train.epochs=2", "--quiet")
    assert result.exit_code == 0, result.stderr
    return out


# --- evaluate knows what the run saw -------------------------------------------------------------

def test_evaluate_on_the_training_file_is_all_in_sample(sales_run, tmp_path):
    out = tmp_path / "m.json"
    result = run_cli("evaluate", SALES, "--model", sales_run, "--out", out)
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    # No refit, no conformal: the last 12 months of all 12 stores were the early-stopping windows.
    assert report["in_sample"] == {"points": 144, "of": 144, "trained": 0, "early_stopping": 144,
                                   "calibration": 0}
    assert report["per_window"][0]["in_sample"] == report["in_sample"]
    assert "in-sample: 144 of 144 points" in result.stdout
    assert notes(result.stderr) == [
        "note: 144 of 144 scored points were seen by the run (144 chose the best epoch): in-sample; "
        "to score held-out data, train on a file cut before the evaluation windows"]
    assert "error" not in result.stderr

    # The window before it: trained on (store_12's 36 months included: it has 12 before the origin).
    report = evaluate(SALES, sales_run, windows=2)
    assert report["per_window"][0]["in_sample"] == {"points": 144, "of": 144, "trained": 144,
                                                    "early_stopping": 0, "calibration": 0}
    assert report["in_sample"]["points"] == report["in_sample"]["of"] == 288

    quiet = run_cli("evaluate", SALES, "--model", sales_run, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_windows_past_the_training_file_are_out_of_sample(cut_run, tmp_path):
    out = tmp_path / "m.json"
    result = run_cli("evaluate", SALES, "--model", cut_run, "--out", out, "--windows", 4)
    assert result.exit_code == 0, result.stderr
    windows = [w["in_sample"] for w in json.loads(out.read_text())["per_window"]]
    # The cut file: 11 stores of 84 months (train to 2021, early-stop on 2022, calibrate on 2023) and
    # store_12 with 24 (2022-2023: too short to validate, trained on all of it).
    assert windows == [
        {"points": 132, "of": 132, "trained": 132, "early_stopping": 0, "calibration": 0},     # 2021
        {"points": 132, "of": 132, "trained": 0, "early_stopping": 132, "calibration": 0},     # 2022
        {"points": 144, "of": 144, "trained": 12, "early_stopping": 0, "calibration": 132},    # 2023
        {"points": 0, "of": 144, "trained": 0, "early_stopping": 0, "calibration": 0},         # 2024: new
    ]
    assert notes(result.stderr) == [
        "note: 408 of 552 scored points were seen by the run (144 trained on, 132 chose the best epoch, "
        "132 calibrated the intervals): in-sample; to score held-out data, train on a file cut before "
        "the evaluation windows"]

    # Only the new year: nothing in-sample, no note.
    held_out = run_cli("evaluate", SALES, "--model", cut_run)
    assert held_out.exit_code == 0, held_out.stderr
    assert "in-sample: 0 of 144 points" in held_out.stdout and notes(held_out.stderr) == []


def test_series_the_run_never_saw_are_out_of_sample(sales_run, tmp_path):
    renamed = tmp_path / "renamed.csv"
    frame = pd.read_csv(SALES)
    frame["unique_id"] = frame["unique_id"].replace({"store_01": "new_store"})
    frame.to_csv(renamed, index=False)
    report = evaluate(renamed, sales_run)
    assert report["in_sample"] == {"points": 132, "of": 144, "trained": 0, "early_stopping": 132,
                                   "calibration": 0}


def test_refit_runs_trained_on_everything(tmp_path, cut_file):
    out = tmp_path / "refit"
    result = run_cli("train", SALES, "--out", out, *TINY, "--set", "train.epochs=1", "--set",
                     "train.refit_epochs=1", "--quiet")
    assert result.exit_code == 0, result.stderr
    seen = load_checkpoint(out / "model.pt")["seen"]
    assert seen["refit"] == [True]
    report = evaluate(SALES, out, windows=2)
    assert report["in_sample"] == {"points": 288, "of": 288, "trained": 288, "early_stopping": 0,
                                   "calibration": 0}


def test_checkpoint_records_what_the_run_saw(sales_run, cut_run):
    payload = load_checkpoint(sales_run / "model.pt")
    assert payload["format_version"] == FORMAT_VERSION == 4
    seen = payload["seen"]
    assert set(seen) == {"train_end", "early_stopping_end", "calibration_end", "refit"}
    assert seen["train_end"] == ["2023-12-01T00:00:00"] * 12
    assert seen["early_stopping_end"] == ["2024-12-01T00:00:00"] * 12
    assert seen["calibration_end"] == [None] * 12 and seen["refit"] == [False]
    # Loadable the safe way: only plain types.
    assert torch.load(sales_run / "model.pt", weights_only=True)["seen"] == seen

    seen = load_checkpoint(cut_run / "model.pt")["seen"]
    assert seen["train_end"] == ["2021-12-01T00:00:00"] * 11 + ["2023-12-01T00:00:00"]
    assert seen["early_stopping_end"] == ["2022-12-01T00:00:00"] * 11 + [None]
    assert seen["calibration_end"] == ["2023-12-01T00:00:00"] * 11 + [None]


def test_old_format_checkpoints_still_evaluate_with_in_sample_unknown(sales_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(sales_run, old)
    payload = load_checkpoint(old / "model.pt")
    del payload["seen"]
    torch.save({**payload, "format_version": 3}, old / "model.pt")
    out = tmp_path / "m.json"
    result = run_cli("evaluate", SALES, "--model", old, "--out", out, "--windows", 2)
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["in_sample"] is None and [w["in_sample"] for w in report["per_window"]] == [None, None]
    assert report["metrics"] == evaluate(SALES, sales_run, windows=2)["metrics"]
    assert "in-sample: unknown (older run)" in result.stdout and "?" in result.stdout   # per-window column
    assert len(notes(result.stderr)) == 1 and "predates in-sample tracking" in result.stderr


# --- metrics.json says what its numbers are ------------------------------------------------------

def test_metrics_json_labels_the_validation_scores(sales_run, cut_run):
    metrics = json.loads((sales_run / "metrics.json").read_text())
    assert set(metrics["validation"]) == {"model", "naive", "seasonal_naive"}     # readable as before
    label = metrics["validation_windows"]
    assert label["kind"] == "early_stopping" and label["in_sample"] is True and label["n_series"] == 12
    assert label["scores"] == ["validation", "intervals", "quantile_loss"]
    assert "chose the best epoch" in label["note"] and "refit" not in label["note"]
    conformal = json.loads((cut_run / "metrics.json").read_text())["conformal"]
    assert conformal["windows"].startswith("calibration windows") and conformal["n_calibration"] == 11


# --- conformal corrections from windows that neither trained nor chose the epoch -----------------

def test_split_parts_by_hand():
    lengths = np.array([40, 37, 36, 25, 24, 13])
    plain = split_parts(lengths, 12)
    assert plain.train.tolist() == [28, 25, 24, 13, 24, 13]
    assert plain.validated.tolist() == [True, True, True, True, False, False]
    assert not plain.calibrated.any()
    parts = split_parts(lengths, 12, conformal=True)
    # >= 37 points: calibrate on the last 12, early-stop on the 12 before, train on the rest (>= 13).
    assert parts.calibrated.tolist() == [True, True, False, False, False, False]
    assert parts.train.tolist() == [16, 13, 24, 13, 24, 13]
    assert parts.stop_end.tolist() == [28, 25, 36, 25, 24, 13]


def test_conformal_windows_are_disjoint_from_early_stopping_windows(cut_run, cut_file):
    run = load_run(cut_run)
    series = read_for_run(run, cut_file)
    lengths = series.lengths()
    parts = split_parts(lengths, 12, conformal=True)
    scaled = [(v - lo) / sc for v, lo, sc in zip(series.values, run.scaler.loc, run.scaler.scale)]
    buffer = SeriesBuffer.build(scaled, run.config.input_length, torch.device("cpu"))

    def targets(starts: torch.Tensor) -> set[int]:
        """Flat buffer indices of every target point of these windows."""
        first = starts.numpy() + buffer.lookback
        return set((first[:, None] + np.arange(12)).ravel().tolist())

    stopping, calibration = stopping_starts(buffer, parts), calibration_starts(buffer, parts)
    training = buffer.training_starts(parts.train, 12)
    assert len(stopping) == 11 and len(calibration) == 11        # store_12 (24 points) neither
    assert targets(stopping).isdisjoint(targets(calibration))
    assert targets(training).isdisjoint(targets(calibration)) and targets(training).isdisjoint(targets(stopping))
    # The calibration windows are each series' last 12 points, the early-stopping ones the 12 before.
    ends = buffer.offsets + lengths
    assert targets(calibration) == set((ends[:11, None] - 12 + np.arange(12)).ravel().tolist())
    assert targets(stopping) == set((ends[:11, None] - 24 + np.arange(12)).ravel().tolist())

    # The recorded corrections are calibrate() on exactly those windows, with the trained weights.
    payload = load_checkpoint(cut_run / "model.pt")
    raw = Ensemble.from_weights(run.config, payload["models"]).eval()
    again = calibrate(raw, buffer, calibration, 12, None)
    np.testing.assert_allclose(again["corrections"], payload["conformal"]["corrections"], rtol=1e-6)
    other = calibrate(raw, buffer, stopping, 12, None)
    assert not np.allclose(other["corrections"], payload["conformal"]["corrections"])


def test_conformal_needs_a_series_long_enough_to_calibrate(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *CONFORMAL, "--horizon", 32)   # 3 x 32 + 1 > 96
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "model.conformal needs a series of 97 points (3 x horizon + 1)" in result.stderr
    assert not out.exists()


# --- refit: a fresh optimizer; no weight decay on biases -----------------------------------------

def test_refit_starts_a_fresh_optimizer_at_the_best_epochs_learning_rate(tmp_path, monkeypatch):
    calls = []
    real_epoch = train_module.run_epoch

    def recording_epoch(model, optimizer, *args, **kwargs):
        calls.append({"optimizer": optimizer, "state": len(optimizer.state),
                      "lr": [group["lr"] for group in optimizer.param_groups]})
        return real_epoch(model, optimizer, *args, **kwargs)

    # Epoch 2 is best; epochs 3 and 4 are worse, so the learning rate is cut twice (lr_patience 0).
    losses = iter([1.0, 0.5, 0.9, 0.9])
    monkeypatch.setattr(train_module, "run_epoch", recording_epoch)
    monkeypatch.setattr(train_module, "validation_loss", lambda *a, **k: next(losses))
    config = load_config(None, {"train.recipe": "none",
                                "model.hidden_size": 8, "model.layers": 1, "train.batch_size": 128,
                                "train.epochs": 4, "train.patience": 5, "train.lr_patience": 0,
                                "train.lr_factor": 0.5, "train.lr": 0.002, "train.refit_epochs": 2})
    result = train(SALES, tmp_path / "run", config)
    assert result.best_epoch == 2 and len(calls) == 6
    training, refit = calls[:4], calls[4:]
    assert [c["lr"] for c in training] == [[0.002] * 2, [0.002] * 2, [0.002] * 2, [0.001] * 2]
    assert training[1]["state"] > 0                              # the training optimizer has moments
    assert refit[0]["optimizer"] is not training[0]["optimizer"]
    assert refit[0]["state"] == 0                                 # fresh: no moments, step 0
    assert refit[0]["lr"] == [0.002, 0.002]                       # the best epoch's, not 0.0005
    assert refit[1]["optimizer"] is refit[0]["optimizer"] and refit[1]["state"] > 0
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    # history.csv: the rate after each epoch's schedule step, then the refit epochs' own.
    assert history["lr"].tolist() == [0.002, 0.002, 0.001, 0.0005, 0.002, 0.002]


def test_biases_and_embeddings_are_not_decayed():
    config = load_config(None, {"train.recipe": "none",
                                "model.hidden_size": 8, "model.layers": 2, "model.cell": "peephole",
                                "model.series_embedding": 3, "data.horizon": 4})
    model = Forecaster(config.model, 4, 12, n_series=5)
    decay, plain = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in plain["params"]}
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert all(p.ndim == 2 for p in decay["params"]) and "embedding.weight" in kept
    assert {n for n in names.values() if "bias" in n} <= kept and any("bias_hh" in n for n in kept)
    assert {n for n in names.values() if "weight_hh" in n} <= decayed

    # One AdamW step with zero gradients: only decoupled decay moves anything; biases stay put.
    optimizer = make_optimizer(model, lr=0.1, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for n, p in model.named_parameters():
        if n in kept:
            torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0)
        else:
            torch.testing.assert_close(p.detach(), before[n] * (1 - 0.1 * 0.5))


def test_forget_gate_bias_survives_strong_weight_decay(tmp_path):
    """The encoder's forget-gate bias starts at 1; with weight decay off biases it is not pulled to 0."""
    config = load_config(None, {"train.recipe": "none",
                                "model.hidden_size": 8, "model.layers": 1, "train.batch_size": 128,
                                "train.epochs": 1, "train.weight_decay": 0.0})
    model = Forecaster(config.model, 12, 36)
    optimizer = make_optimizer(model, 1.0, 1.0)   # decay by lr x wd = 100% of a weight per step
    bias = model.state_dict()["encoder.bias_ih_l0"].clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(model.state_dict()["encoder.bias_ih_l0"], bias, rtol=0, atol=0)
    assert model.state_dict()["encoder.weight_ih_l0"].abs().max() == 0
