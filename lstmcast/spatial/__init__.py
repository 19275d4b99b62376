"""Gridded series: frames on a grid over time (data.grid), forecast by a ConvLSTM encoder-forecaster.

- `grid.py`: the long CSV (time, grid coordinates, values) -> validated frames (GridSet).
- `convlstm.py`: the ConvLSTM cell from Shi et al.'s equations and the encoder-forecaster.
- `fit.py`: training into a run directory (model.pt, last.pt for --resume, config.yaml,
  history.csv, metrics.json), under the same lock and crash-safe replacement as series runs.
- `forecast.py`: loading a gridded run, predict (the next horizon frames in the input's long
  format) and evaluate (against persistence and per-cell seasonal naive).

`lstmcast train / predict / evaluate` hand off here when the config (or the run) says the data
are gridded; this module itself imports neither torch nor pandas.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def wants_grid(config, out_dir, resume: bool) -> bool:
    """Whether a train is of gridded data: data.grid is set, or (--resume without a config) the
    run being resumed is a gridded one."""
    if config is not None:
        return bool(config.data.grid)
    return resume and is_grid_run(out_dir)


def is_grid_run(run_dir) -> bool:
    """Whether `run_dir` holds a gridded run (its config.yaml sets data.grid). Anything unreadable
    is left to the series path, which reports it."""
    try:
        tree = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
        return bool(tree["data"]["grid"])
    except Exception:  # noqa: BLE001 (missing, unreadable, not a mapping: not ours to judge)
        return False
