"""Pinned forecasts: refactors of the training code must not change a single forecast.

What it pins: tiny runs (hidden 8, 1 layer, 2 epochs, fixed seeds) on sample_data/sales_monthly.csv,
trained and forecast on the CPU, covering the main training paths:

  plain      lstm, mse loss
  members    train.ensemble 2 with train.members: smape + window_norm mean, mase + window_norm standard
  quantiles  model.quantiles 0.1,0.5,0.9 with model.conformal (pinball loss scaled like MASE)
  refit      train.refit_epochs 1 (huber loss)
  peephole   model.cell peephole (mae loss, window_norm standard)

For each run the SHA-256 of the forecast CSV (predict's output, byte for byte) and every number in
metrics.json (rounded to 9 significant digits, so the JSON float formatting is not what is pinned)
are compared with digests computed on the code before the "training as a recipe" reshaping.

Why a subprocess with one thread: the float results of CPU kernels can depend on the number of
intra-op threads (reduction order), and torch.set_num_threads is process-global. Running every case
in a fresh interpreter with torch.set_num_threads(1) makes the bytes reproducible on a machine and
leaves the test session's own thread setting alone (measured: with 2 threads two of the five
forecast CSVs and some metrics differ in the last bits; with 1 thread repeated runs are identical).
The digests are of one platform (PLATFORM: torch build, CPU kernel level, architecture). There
the bytes must match exactly. On another platform the same float operations may round differently,
so the test compares every metrics.json number within a relative 1e-3 instead, which a changed
recipe still fails (to pin bytes there, regenerate on the code before a change:
`python tests/test_pinned_forecasts.py` prints the current values).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SALES = ROOT / "sample_data" / "sales_monthly.csv"

BASE = {"model.hidden_size": 8, "model.layers": 1, "train.batch_size": 128, "train.epochs": 2,
        "train.seed": 7, "data.horizon": 6, "train.recipe": "none"}
CASES = {
    "plain": {},
    "members": {"train.ensemble": 2, "train.members": [
        {"train.loss": "smape", "model.window_norm": "mean"},
        {"train.loss": "mase", "model.window_norm": "standard"}]},
    "quantiles": {"model.quantiles": [0.1, 0.5, 0.9], "model.conformal": True, "train.loss": "mase"},
    "refit": {"train.refit_epochs": 1, "train.loss": "huber"},
    "peephole": {"model.cell": "peephole", "train.loss": "mae", "model.window_norm": "standard"},
}

# Computed on commit b0d00fe (before the reshaping), one thread, on this platform.
PLATFORM = {"torch": "2.13.0+cpu", "cpu_capability": "AVX512", "machine": "x86_64"}
PINNED: dict[str, dict] = {
    "plain": {
        "forecast_sha256": "e690f4175765a24858168c68ab0ea185475be4424d3f8174f65d17a487cf0a01",
        "metrics": {
            "best_epoch": 2.0, "best_val_loss": 1.87586085, "epochs_run": 2.0, "horizon": 6.0, "members": 1.0,
            "n_series": 12.0, "n_validated": 12.0, "refit_epochs": 0.0, "season_length": 12.0,
            "validation.model.mae": 164.161693, "validation.model.mase": 3.30523592,
            "validation.model.rmse": 277.467625, "validation.model.smape": 15.0914769,
            "validation.naive.mae": 166.261111, "validation.naive.mase": 3.34667741,
            "validation.naive.rmse": 279.82074, "validation.naive.smape": 15.3137032,
            "validation.seasonal_naive.mae": 61.3263889, "validation.seasonal_naive.mase": 1.0611532,
            "validation.seasonal_naive.rmse": 102.092898, "validation.seasonal_naive.smape": 5.03169517,
            "validation_windows.n_series": 12.0,
        },
    },
    "members": {
        "forecast_sha256": "597d1b77061dc22f9eb398d22f512692b2b5f4bff73630988ca0a2ec60227b3e",
        "metrics": {
            "best_epoch": 2.0, "best_val_loss": 3.7519563, "epochs_run": 2.0, "horizon": 6.0, "members": 2.0,
            "n_series": 12.0, "n_validated": 12.0, "refit_epochs": 0.0, "season_length": 12.0,
            "validation.model.mae": 165.410592, "validation.model.mase": 3.32970706,
            "validation.model.rmse": 278.826687, "validation.model.smape": 15.2231496,
            "validation.naive.mae": 166.261111, "validation.naive.mase": 3.34667741,
            "validation.naive.rmse": 279.82074, "validation.naive.smape": 15.3137032,
            "validation.seasonal_naive.mae": 61.3263889, "validation.seasonal_naive.mase": 1.0611532,
            "validation.seasonal_naive.rmse": 102.092898, "validation.seasonal_naive.smape": 5.03169517,
            "validation_windows.n_series": 12.0,
        },
    },
    "quantiles": {
        "forecast_sha256": "8b8540efc2b442b55dee667c9fd42ce1eff1a437167e8fdd34d929aabd4c2d63",
        "metrics": {
            "best_epoch": 2.0, "best_val_loss": 1.98970493, "conformal.corrections.0.0": -0.566666722,
            "conformal.corrections.0.1": -0.118490934, "conformal.corrections.0.2": 0.521093249,
            "conformal.corrections.0.3": 0.610745728, "conformal.corrections.0.4": 0.836286187,
            "conformal.corrections.0.5": 2.18156004, "conformal.n_calibration": 12.0,
            "conformal.pairs.0.0": 0.1, "conformal.pairs.0.1": 0.9, "epochs_run": 2.0, "horizon": 6.0,
            "intervals.0.1-0.9.coverage": 0.402777778, "intervals.0.1-0.9.nominal": 0.8,
            "intervals.0.1-0.9.width": 366.027161, "members": 1.0, "n_series": 12.0, "n_validated": 12.0,
            "quantile_loss.0.1": 74.9388097, "quantile_loss.0.5": 120.373229, "quantile_loss.0.9": 41.2236357,
            "refit_epochs": 0.0, "season_length": 12.0, "validation.model.mae": 240.746458,
            "validation.model.mase": 4.81452744, "validation.model.rmse": 346.105398,
            "validation.model.smape": 20.4256339, "validation.naive.mae": 241.718056,
            "validation.naive.mase": 4.83413285, "validation.naive.rmse": 347.387875,
            "validation.naive.smape": 20.4972517, "validation.seasonal_naive.mae": 45.0819444,
            "validation.seasonal_naive.mase": 0.885555918, "validation.seasonal_naive.rmse": 73.3377281,
            "validation.seasonal_naive.smape": 4.37995454, "validation_windows.n_series": 12.0,
        },
    },
    "refit": {
        "forecast_sha256": "2125f225eac702e66de31f9ba7b546067a9f821e2b7a3266f9bac5835fc59e00",
        "metrics": {
            "best_epoch": 2.0, "best_val_loss": 0.701940616, "epochs_run": 2.0, "horizon": 6.0, "members": 1.0,
            "n_series": 12.0, "n_validated": 12.0, "refit_epochs": 1.0, "season_length": 12.0,
            "validation.model.mae": 164.160016, "validation.model.mase": 3.30525367,
            "validation.model.rmse": 277.481212, "validation.model.smape": 15.0914939,
            "validation.naive.mae": 166.261111, "validation.naive.mase": 3.34667741,
            "validation.naive.rmse": 279.82074, "validation.naive.smape": 15.3137032,
            "validation.seasonal_naive.mae": 61.3263889, "validation.seasonal_naive.mase": 1.0611532,
            "validation.seasonal_naive.rmse": 102.092898, "validation.seasonal_naive.smape": 5.03169517,
            "validation_windows.n_series": 12.0,
        },
    },
    "peephole": {
        "forecast_sha256": "52866cfa467f83c0da8c83c6f08d9bdd3406d33ff2b3ffffcaa06fadc7020c1e",
        "metrics": {
            "best_epoch": 2.0, "best_val_loss": 1.40432485, "epochs_run": 2.0, "horizon": 6.0, "members": 1.0,
            "n_series": 12.0, "n_validated": 12.0, "refit_epochs": 0.0, "season_length": 12.0,
            "validation.model.mae": 165.273057, "validation.model.mase": 3.32792157,
            "validation.model.rmse": 278.51354, "validation.model.smape": 15.2134244,
            "validation.naive.mae": 166.261111, "validation.naive.mase": 3.34667741,
            "validation.naive.rmse": 279.82074, "validation.naive.smape": 15.3137032,
            "validation.seasonal_naive.mae": 61.3263889, "validation.seasonal_naive.mase": 1.0611532,
            "validation.seasonal_naive.rmse": 102.092898, "validation.seasonal_naive.smape": 5.03169517,
            "validation_windows.n_series": 12.0,
        },
    },
}


def numbers(tree, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON tree, by its dotted path, rounded to 9 significant digits (but the
    wall-clock seconds of the time budget)."""
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "time_budget":
                continue
            out.update(numbers(value, f"{prefix}{key}."))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            out.update(numbers(value, f"{prefix}{index}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix.rstrip(".")] = float(f"{tree:.9g}")
    return out


def platform_now() -> dict[str, str]:
    import platform

    import torch
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine()}


def run_cases(folder: Path) -> dict[str, dict]:
    """Train and forecast every case (in this process); the digests."""
    import torch

    from lstmcast.config import load_config
    from lstmcast.predict import predict
    from lstmcast.train import train

    torch.set_num_threads(1)
    results = {}
    for name, overrides in CASES.items():
        config = load_config(None, {**BASE, **overrides})
        out = folder / name
        train(SALES, out, config)
        predict(SALES, out, folder / f"{name}.csv")
        results[name] = {
            "forecast_sha256": hashlib.sha256((folder / f"{name}.csv").read_bytes()).hexdigest(),
            "metrics": numbers(json.loads((out / "metrics.json").read_text())),
        }
    return {"platform": platform_now(), "results": results}


def test_forecasts_are_pinned(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    results = report["results"]
    if not PINNED:
        pytest.fail("no pinned digests yet; current values:\n" + json.dumps(results, indent=1))
    assert set(results) == set(PINNED)
    exact = report["platform"] == PLATFORM
    for name in CASES:
        got, want = results[name], PINNED[name]
        if exact:
            assert got["metrics"] == want["metrics"], name
            assert got["forecast_sha256"] == want["forecast_sha256"], name
        else:  # another platform: the same recipe within rounding, not the same bits
            assert set(got["metrics"]) == set(want["metrics"]), name
            for key, value in want["metrics"].items():
                assert got["metrics"][key] == pytest.approx(value, rel=1e-3, abs=1e-9), (name, key)


if __name__ == "__main__":
    import tempfile

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run_cases(folder), sort_keys=True))
