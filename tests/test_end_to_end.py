"""train -> predict -> evaluate through the CLI on the bundled sample data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
import yaml
from conftest import LOAD_WIDE, SALES, TINY, run_cli


def test_run_directory_files(sales_run):
    names = sorted(p.name for p in sales_run.iterdir())
    assert names == [".lstmcast-run", "config.yaml", "history.csv", "last.pt", "metrics.json", "model.pt"]
    history = pd.read_csv(sales_run / "history.csv")
    assert list(history.columns) == ["member", "epoch", "train_loss", "val_loss", "lr", "seconds"]
    assert history["member"].tolist() == [1, 1, 1]
    assert history["epoch"].tolist() == [1, 2, 3]
    assert np.isfinite(history[["train_loss", "val_loss", "lr"]].to_numpy()).all()
    config = yaml.safe_load((sales_run / "config.yaml").read_text())
    # The saved config is resolved: detected columns and the default lookback are explicit.
    assert config["data"]["id_col"] == "unique_id" and config["data"]["time_col"] == "ds"
    assert config["data"]["target"] == ["y"] and config["data"]["lookback"] == 36
    assert config["model"]["hidden_size"] == 8 and config["train"]["epochs"] == 3
    metrics = json.loads((sales_run / "metrics.json").read_text())
    assert metrics["horizon"] == 12 and metrics["season_length"] == 12 and metrics["n_series"] == 12
    assert set(metrics["validation"]) == {"model", "naive", "seasonal_naive"}
    for row in metrics["validation"].values():
        assert set(row) == {"mae", "rmse", "smape", "mase"}
        assert all(np.isfinite(v) for v in row.values())


def test_predict_writes_future_timestamps(sales_run, tmp_path):
    out = tmp_path / "forecasts.csv"
    result = run_cli("predict", SALES, "--model", sales_run, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert f"to {out}" in result.stderr
    forecasts = pd.read_csv(out, parse_dates=["ds"])
    data = pd.read_csv(SALES, parse_dates=["ds"])
    assert list(forecasts.columns) == ["unique_id", "ds", "forecast"]
    assert len(forecasts) == 12 * 12
    assert np.isfinite(forecasts["forecast"]).all()
    for sid, rows in forecasts.groupby("unique_id"):
        last = data.loc[data["unique_id"] == sid, "ds"].max()
        expected = pd.date_range(last, periods=13, freq="MS")[1:]
        assert list(rows["ds"]) == list(expected), sid
    # The short store (36 months < lookback 36 + horizon 12) is padded, not dropped.
    assert (forecasts["unique_id"] == "store_12").sum() == 12


def test_predict_shorter_horizon_is_a_prefix(sales_run, tmp_path):
    full, short = tmp_path / "full.csv", tmp_path / "short.csv"
    assert run_cli("predict", SALES, "--model", sales_run, "--out", full).exit_code == 0
    assert run_cli("predict", SALES, "--model", sales_run, "--out", short, "--horizon", 3).exit_code == 0
    full_frame, short_frame = pd.read_csv(full), pd.read_csv(short)
    assert len(short_frame) == 12 * 3
    head = full_frame.groupby("unique_id").head(3).reset_index(drop=True)
    pd.testing.assert_frame_equal(short_frame, head)


def test_evaluate_reports_model_and_baselines(sales_run, tmp_path):
    out = tmp_path / "metrics.json"
    result = run_cli("evaluate", SALES, "--model", sales_run, "--out", out)
    assert result.exit_code == 0, result.stderr
    for name in ("model", "naive", "seasonal_naive", "smape", "mase"):
        assert name in result.stdout
    report = json.loads(out.read_text())
    assert report["horizon"] == 12 and report["n_series"] == 12
    # Hand-check the naive baseline's MAE: repeat the value before the held-out year.
    data = pd.read_csv(SALES)
    errors = []
    for _, rows in data.groupby("unique_id"):
        y = rows["y"].to_numpy()
        errors.append(np.abs(y[-12:] - y[-13]))
    assert np.isclose(report["metrics"]["naive"]["mae"], np.mean(errors))


def test_wide_file_one_series_per_column(tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", LOAD_WIDE, "--out", run, "--target", "feeder_a,feeder_b,feeder_c",
                     "--horizon", 24, "--lookback", 48, "--set", "train.epochs=1", *TINY)
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "f.csv"
    assert run_cli("predict", LOAD_WIDE, "--model", run, "--out", out).exit_code == 0
    forecasts = pd.read_csv(out, parse_dates=["ds"])
    assert list(forecasts.columns) == ["unique_id", "ds", "forecast"]
    assert sorted(forecasts["unique_id"].unique()) == ["feeder_a", "feeder_b", "feeder_c"]
    first = forecasts[forecasts["unique_id"] == "feeder_a"]["ds"]
    assert list(first) == list(pd.date_range("2024-07-15 00:00", periods=24, freq="h"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["season_length"] == 24


def test_single_series_without_id_column(tmp_path):
    data = pd.read_csv(SALES)
    one = data[data["unique_id"] == "store_03"][["ds", "y"]].rename(columns={"y": "sales"})
    path = tmp_path / "one.csv"
    one.to_csv(path, index=False)
    run = tmp_path / "run"
    assert run_cli("train", path, "--out", run, "--set", "train.epochs=1", *TINY).exit_code == 0
    out = tmp_path / "f.csv"
    assert run_cli("predict", path, "--model", run, "--out", out).exit_code == 0
    forecasts = pd.read_csv(out)
    assert forecasts["unique_id"].unique().tolist() == ["sales"] and len(forecasts) == 12


def test_non_terminal_output_is_plain(tmp_path):
    result = run_cli("train", SALES, "--out", tmp_path / "run", "--set", "train.epochs=2", *TINY)
    assert result.exit_code == 0
    assert "\x1b[" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("device cpu, precision fp32; 12 series")
    assert lines[1].startswith("epoch 1/2 train_loss=") and lines[2].startswith("epoch 2/2 ")
    assert "run written to" in lines[-1]


def test_quiet_prints_nothing(tmp_path):
    result = run_cli("train", SALES, "--out", tmp_path / "run", "--set", "train.epochs=1", "--quiet",
                     *TINY)
    assert result.exit_code == 0 and result.stderr == "" and result.stdout == ""


def test_module_entry_point():
    import subprocess
    import sys

    from lstmcast import __version__
    done = subprocess.run([sys.executable, "-m", "lstmcast", "version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == __version__


def test_checkpoint_loads_weights_only(sales_run):
    for name in ("model.pt", "last.pt"):
        payload = torch.load(sales_run / name, map_location="cpu", weights_only=True)
        assert payload["format_version"] == 4
        assert payload["freq"] == "MS" and payload["columns"]["time_col"] == "ds"
        assert len(payload["scaler"]["loc"]) == 12 and payload["series_ids"][0] == "store_01"
        assert payload["last_timestamps"][0].startswith("2024-12-01")
        assert payload["config"]["data"]["horizon"] == 12
    last = torch.load(sales_run / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and "optimizer" in last and "rng" in last
