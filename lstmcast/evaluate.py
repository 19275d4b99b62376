"""Hold out the last `horizon` points of every series, forecast them, score model vs baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write_text
from .errors import LstmcastError
from .metrics import compare, season_length
from .predict import forecast, load_run, read_for_run


def evaluate(data_path: str | Path, run_dir: str | Path, out_path: str | Path | None = None, *,
             device: str = "cpu", season: int | None = None) -> dict:
    """Metrics for the model and the naive / seasonal-naive baselines; JSON to `out_path` if given."""
    if season is not None and season < 1:
        raise LstmcastError(f"--season-length {season}: must be 1 or more (1 = no seasonality)")
    run = load_run(run_dir, device)
    series = read_for_run(run, data_path)
    horizon = run.horizon
    short = [(sid, len(v)) for sid, v in zip(series.ids, series.values) if len(v) <= horizon]
    if short:
        sid, n = short[0]
        raise LstmcastError(f"{data_path}: series '{sid}' has {n} points; evaluate holds out the "
                            f"last {horizon}, so each series needs at least {horizon + 1}")
    history = series.head(horizon)
    actual = np.stack([v[-horizon:] for v in series.values])
    season = season or season_length(series.freq)
    result = {"data": str(data_path), "run": str(run_dir), "horizon": horizon,
              "season_length": season, "n_series": len(series),
              "metrics": compare(actual, forecast(run, history), history.values, season)}
    if out_path is not None:
        atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
    return result
