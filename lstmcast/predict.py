"""Forecasts past the end of each series, with the real future timestamps."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import classical
from .checkpoint import BEST, load_checkpoint
from .config import Config, quantile_column, read_yaml
from .covariates import FeatureSpec
from .data import Columns, SeriesSet, read_future, read_series, series_from_table
from .device import resolve_device
from .errors import LstmcastError
from .events import Callback, Note
from .metrics import season_length
from .model import Ensemble, forecast_windows
from .outputs import TableWriter, csv_text, need_pyarrow
from .precision import fp32_math
from .run import RunMeta, config_from_saved, upgrade_payload
from .rundir import check_output
from .runtime import Runtime
from .scaling import Scaler, check_magnitude, to_scaled, unscale
from .stream import NotStreamable, TimeFormat, series_tables
from .tbptt import forecast_origins
from .windows import SeriesBuffer

if TYPE_CHECKING:  # torch itself is used through model, windows and device
    import torch


FIXED_BATCH = 1024   # windows per model call in predict, always (padded): forecast_windows(fixed=True)


@dataclass
class Run:
    """A trained run, ready to forecast."""

    path: Path
    model: Ensemble
    config: Config
    scaler: Scaler
    columns: Columns
    freq: str
    device: torch.device
    features: FeatureSpec | None = None   # covariates and calendar; None: as before covariates
    seen: dict | None = None   # the checkpoint's "seen" with its series_ids, last_timestamps; None: format < 4

    @property
    def horizon(self) -> int:
        return self.config.data.horizon

    @property
    def levels(self) -> tuple[float, ...] | None:
        """Quantile levels the model forecasts (model.quantiles with the median), None: point only."""
        return self.model.levels

    @property
    def quantiles(self) -> list[float]:
        """The levels the user asked for, ascending: the q_ columns ([] for point forecasts)."""
        return sorted(self.config.model.quantiles or [])


def load_run(run_dir: str | Path, device: str = "cpu") -> Run:
    """Load the best checkpoint of a run directory onto `device` (any device, whatever trained it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LstmcastError(f"{run_dir}: run directory not found; pass the --out of 'lstmcast train'")
    path = run_dir / BEST
    from .spatial import is_grid_run
    if is_grid_run(run_dir):  # predict and evaluate hand gridded runs to spatial/ before this
        raise LstmcastError(f"{run_dir}: a gridded (ConvLSTM) run; this command reads series, not grids: "
                            f"use 'lstmcast predict' or 'lstmcast evaluate' with it")
    payload = load_checkpoint(path, require=("config", "models", "scaler", "columns", "freq"),
                              upgrade=upgrade_payload)
    target = resolve_device(device)
    try:
        meta, weights = RunMeta.from_checkpoint(payload)   # every older format migrated (run.py)
        model = Ensemble.from_weights(meta.config, weights, meta.conformal, meta.features.dims())
    except LstmcastError as exc:
        raise LstmcastError(f"{path}: {exc}; retrain the run (or copy back its own model.pt)") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise LstmcastError(f"{path}: does not match its config ({what}); retrain the run "
                            f"(or copy back its own model.pt)") from None
    _check_saved_config(run_dir, path, meta.config)
    return Run(run_dir, model.to(target).eval(), meta.config, meta.scaler, meta.columns, meta.freq, target,
               meta.features, meta.in_sample_record)


_SHAPING_TRAIN_KEYS = ("train.ensemble", "train.ensemble_lookbacks", "train.members")


def _check_saved_config(run_dir: Path, path: Path, config: Config) -> None:
    """model.pt and the run's config.yaml are written from one config: a difference means one of
    them came from another run (a copied model.pt), and the forecasts would not be this run's."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    advice = "copy back this run's own files or retrain"
    tree = read_yaml(saved_path, "saved config", advice)
    try:
        saved = config_from_saved(tree) if isinstance(tree, dict) else None
    except LstmcastError as exc:
        raise LstmcastError(f"{saved_path}: {exc}; {advice}") from None
    if saved is None:
        raise LstmcastError(f"{saved_path}: not a readable lstmcast config; {advice}")
    ours = {f"{s}.{k}": v for s, keys in config.to_dict().items() for k, v in keys.items()}
    theirs = {f"{s}.{k}": v for s, keys in saved.to_dict().items() for k, v in keys.items()}
    # What the model and its inputs are; the other train keys (epochs, patience, device) may be
    # changed by --resume, and an interrupted resume may not have rewritten model.pt yet.
    shaping = [k for k in ours if not k.startswith("train.") or k in _SHAPING_TRAIN_KEYS]
    key = next((k for k in shaping if ours[k] != theirs[k]), None)
    if key is not None:
        raise LstmcastError(f"{path}: does not match {saved_path} ({key} is {ours[key]!r} in model.pt, "
                            f"{theirs[key]!r} in config.yaml); the model.pt may come from another run: "
                            f"{advice}")


def read_for_run(run: Run, data_path: str | Path | pd.DataFrame, *, dayfirst: bool | None = None,
                 name: str = "data frame") -> SeriesSet:
    """Read a CSV (Parquet, a DataFrame called `name` in messages) with the columns, fill policy
    and frequency the run was trained with; `dayfirst` None: the run's data.dayfirst."""
    cols = run.columns
    dayfirst = run.config.data.dayfirst if dayfirst is None else dayfirst
    series = read_series(data_path, id_col=cols.id_col if cols.id_in_input else None,
                         time_col=cols.time_col, target=list(cols.targets),
                         fill=run.config.data.fill, expected_freq=run.freq,
                         covariates=run.config.data.covariates, dayfirst=dayfirst, name=name)
    check_magnitude(run.scaler.method, series.ids, series.values,
                    name if isinstance(data_path, pd.DataFrame) else data_path)
    return series


def check_horizon(run: Run, horizon: int | None) -> int:
    if horizon is None:
        return run.horizon
    if not 1 <= horizon <= run.horizon:
        raise LstmcastError(f"--horizon {horizon}: this run was trained for horizon {run.horizon}; "
                            f"use 1..{run.horizon} or retrain with a longer --horizon")
    return horizon


def future_values(run: Run, series: SeriesSet, future: str | Path | None, steps: int) -> np.ndarray | None:
    """(n_series, steps, n_future) future covariates from the --future file, or None (none used)."""
    names = run.features.future if run.features is not None else ()
    if names and future is None:
        cols = run.columns
        needed = ([cols.id_col] if cols.id_in_input else []) + [cols.time_col, *names]
        raise LstmcastError(f"this run reads future covariates ({', '.join(names)}); pass --future FILE.csv "
                            f"with columns {', '.join(needed)} for each of the next {steps} steps of every series")
    if not names and future is not None:
        raise LstmcastError(f"--future {future}: this run has no future covariates; drop --future")
    return read_future(future, series, names, steps) if names else None


def forecast(run: Run, series: SeriesSet, horizon: int | None = None,
             future: str | Path | None = None) -> np.ndarray:
    """(n_series, horizon) forecasts past the end of each series; (n, horizon, Q) with quantiles.
    `future`: the CSV of future covariate values, for runs trained with data.future_covariates."""
    horizon = check_horizon(run, horizon)
    values = future_values(run, series, future, horizon)
    loc, scale = run.scaler.for_series(series.ids, series.values)  # (unseen series: their whole history)
    if not run.config.train.tbptt:  # a stateful model warms its state over the whole history
        series = series.last_points(reads(run))      # all a windowed forecast (and model.classical) reads
    tail = run.features.tail(series, values, run.horizon) if run.features is not None else None
    return forecast_at(run, series, loc, scale, series.lengths(), tail=tail, fixed=True)[:, :horizon]


def forecast_at(run: Run, series: SeriesSet, loc: np.ndarray, scale: np.ndarray,
                origins: np.ndarray, index: np.ndarray | None = None,
                tail: list[np.ndarray] | None = None, fixed: bool = False) -> np.ndarray:
    """(n, run.horizon) forecasts in the data's units from n cut points, in one batched pass;
    (n, run.horizon, Q) with quantiles.

    Forecast j reads series `index[j]` (default: series j) up to, not including, point
    `origins[j]`; series i is scaled by (loc[i], scale[i]). Origin = length forecasts the future,
    which with known future features needs `tail` (FeatureSpec.tail): the rows after each end.
    `fixed`: batches of one size (forecast_windows), so that each forecast is the same bits
    whichever series are forecast with it (predict's chunks).
    """
    index = np.arange(len(series)) if index is None else np.asarray(index)
    scaled = to_scaled(series.values, loc, scale)
    spec = run.features
    extra = spec.extra(series) if spec is not None else None
    n_known = spec.n_known if spec is not None else 0
    codes = spec.codes(series.ids) if spec is not None and run.config.model.series_embedding else None
    buffer = SeriesBuffer.build(scaled, run.config.input_length, run.device, extra, tail,
                                n_known=n_known, horizon=run.horizon, codes=codes)
    runtime = Runtime.for_forecast(run.device, run.config.train.precision, run.config.cells_in_use(),
                                   run.config.member_shapes())
    with fp32_math(runtime.precision):
        if run.config.train.tbptt:  # stateful: the state warmed over the whole history before each origin
            out = forecast_origins(run.model, buffer, origins, index, runtime)
        else:
            out = forecast_windows(run.model, buffer.model_inputs, buffer.origin_starts(origins, index), runtime,
                                   **({"batch_size": FIXED_BATCH, "fixed": True} if fixed else {}))
    values = unscale(out.cpu().double().numpy(), loc[index], scale[index])
    methods = run.config.model.classical
    if methods:   # point forecasts only (keys.ModelConfig): the median with the classical forecasts
        season = season_length(run.freq)
        points = classical.history_points(run.config.input_length, season)
        histories = [series.values[i][max(0, o - points): o] for i, o in zip(index, np.asarray(origins))]
        values = classical.combine(values, classical.forecasts(methods, histories, run.horizon, season, points))
    return values


def reads(run: Run) -> int:
    """How many of each series' last points a forecast past its end reads."""
    if not run.config.model.classical:
        return run.config.input_length
    return classical.history_points(run.config.input_length, season_length(run.freq))


def point(run: Run, values: np.ndarray) -> np.ndarray:
    """(n, horizon) point forecasts: the median level of quantile forecasts, else `values` itself."""
    return values if values.ndim == 2 else values[..., run.model.median_index]


def forecast_frame(run: Run, series: SeriesSet, values: np.ndarray) -> pd.DataFrame:
    """One row per series and future step: id column, time column, forecast (the median with
    quantiles), then q_<level> for each requested level, ascending."""
    horizon = values.shape[1]
    ids = np.repeat(np.array(series.ids, dtype=object), horizon)
    times = series.all_future_times(horizon)
    columns = {run.columns.id_col: ids, run.columns.time_col: times,
               "forecast": point(run, values).reshape(-1)}
    for level in run.quantiles:
        columns[quantile_column(level)] = values[..., run.levels.index(level)].reshape(-1)
    return pd.DataFrame(columns)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/N' (0 <= i < N) -> (i, N); None -> None. LstmcastError when malformed."""
    if text is None:
        return None
    parts = str(text).split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        index, count = -1, 0
    if len(parts) != 2 or count < 1 or not 0 <= index < count:
        raise LstmcastError(f"--shard {text}: write it as i/N with 0 <= i < N, e.g. --shard 0/4 ... --shard 3/4 "
                            f"(Kubernetes' JOB_COMPLETION_INDEX and 0-based Slurm array ids fit i)")
    return index, count


def shard_of(ids: list[str], count: int) -> np.ndarray:
    """(n,) each series' shard: CRC-32 of its id (UTF-8) modulo `count`, the same on every
    machine, Python and library version, so that any scheduler can fan the series out."""
    return np.array([zlib.crc32(str(i).encode("utf-8")) % count for i in ids], dtype=np.int64)


CHUNK_SERIES = 10_000   # series forecast at a time when writing a file (0: the whole file at once)


@dataclass
class Written:
    """What predict wrote to its `out_path`."""

    path: Path
    rows: int
    series: int
    steps: int


def predict(data_path: str | Path, run_dir: str | Path, out_path: str | Path | None = None, *,
            horizon: int | None = None, device: str = "cpu", future: str | Path | None = None,
            shard: tuple[int, int] | None = None, chunk_series: int | None = None,
            on_event: Callback | None = None) -> pd.DataFrame | Written:
    """Forecast past the end of every series in `data_path`: the forecasts as a DataFrame, or,
    with `out_path`, written there (Parquet for a .parquet / .pq name, else CSV) and a Written.

    Writing a file, the series go through `chunk_series` at a time (default CHUNK_SERIES; 0: all
    at once), read and written incrementally, so memory follows the chunk, not the file; the file
    is the same, byte for byte, whatever the chunk. That needs each series' rows together: a file
    where they are not is read whole, with a Note to `on_event` saying so.
    `future`: CSV of the future covariates (runs trained with data.future_covariates).
    `shard` (i, N): only the series whose shard_of is i; the N shards' outputs together are
    the unsharded output, row for row."""
    from .spatial import is_grid_run
    if is_grid_run(run_dir):  # a gridded (ConvLSTM) run: the next frames, spatial/forecast.py
        if shard is not None:
            raise LstmcastError("--shard: a gridded run forecasts whole frames; it has no series to shard")
        from .spatial.forecast import predict_grid
        return predict_grid(data_path, run_dir, out_path, horizon=horizon, device=device, future=future)
    chunk = CHUNK_SERIES if chunk_series is None else chunk_series
    if chunk < 0:
        raise LstmcastError(f"--chunk-series {chunk}: must be 0 (the whole file at once) or more")
    if out_path is not None:  # before any work: a bad --out is found at once
        check_output(out_path, [data_path, future], run_dir)
        need_pyarrow(out_path)
    run = load_run(run_dir, device)
    steps = check_horizon(run, horizon)
    if out_path is None:
        return _forecasts(run, read_for_run(run, data_path), steps, horizon, future, shard)
    with TableWriter(out_path) as writer:
        written = _write_forecasts(run, data_path, writer, steps, horizon, future, shard, chunk,
                                   on_event or (lambda event: None))
        writer.commit()
    return written


def _forecasts(run: Run, series: SeriesSet, steps: int, horizon: int | None, future, shard) -> pd.DataFrame:
    """forecast_frame of `series` (of its shard)."""
    if shard is not None:
        series = series.subset(list(np.flatnonzero(shard_of(series.ids, shard[1]) == shard[0])))
    if len(series) == 0:  # an empty shard: the header alone
        values = np.zeros((0, steps) + ((len(run.levels),) if run.levels else ()))
        return forecast_frame(run, series, values)
    return forecast_frame(run, series, forecast(run, series, horizon, future))


def _write_forecasts(run: Run, data_path, writer: TableWriter, steps: int, horizon, future, shard,
                     chunk: int, on_event: Callback) -> Written:
    """Every chunk's forecasts to `writer`, in file order. When a later chunk holds a kind of
    timestamp the written ones do not (TimeFormat), or the file cannot be read in parts, the
    table is written again from the start (the run stays loaded)."""
    times = TimeFormat()
    time_col = run.columns.time_col
    writer.csv = lambda frame, header: csv_text(frame, header=header, times={time_col: times.shown()})
    while True:
        rows = n_series = 0
        try:
            for series in series_chunks(run, data_path, chunk):
                frame = _forecasts(run, series, steps, horizon, future, shard)
                if times.add(frame[time_col]) and rows and not writer.parquet:
                    raise _Again()
                writer.write(frame)
                rows, n_series = rows + len(frame), n_series + len(frame) // steps
            return Written(Path(writer.path), rows, n_series, steps)
        except _Again:
            writer.restart()
        except NotStreamable as exc:
            on_event(whole_file_note(data_path, exc))
            writer.restart()
            chunk = 0


def whole_file_note(data_path, reason: NotStreamable) -> Note:
    return Note(f"{data_path}: {reason}; forecasting the file in one piece, which takes memory "
                f"in proportion to the file (group each series' rows together to stream it)")


class _Again(Exception):
    """Write the table again: a timestamp of a new kind changed the format of the time column."""


def series_chunks(run: Run, data_path, chunk: int):
    """SeriesSets of `chunk` whole series each, in file order (read_for_run, part by part); the
    whole file as one when chunk is 0, for a wide file (each column a series), future covariates
    or a stateful (train.tbptt) run, whose batches pack series together."""
    cols = run.columns
    if chunk == 0 or not cols.id_in_input or (run.features is not None and run.features.future) \
            or run.config.train.tbptt or isinstance(data_path, pd.DataFrame):
        yield read_for_run(run, data_path)
        return
    path, zones = Path(data_path), set()
    for table in series_tables(path, cols.id_col, chunk, categories=(cols.time_col,)):
        facts: dict = {}
        series = series_from_table(path, table, id_col=cols.id_col, time_col=cols.time_col,
                                   target=list(cols.targets), fill=run.config.data.fill, expected_freq=run.freq,
                                   covariates=run.config.data.covariates, dayfirst=run.config.data.dayfirst,
                                   facts=facts)
        check_magnitude(run.scaler.method, series.ids, series.values, data_path)
        if facts.get("offsets"):
            raise NotStreamable("its timestamps have several UTC offsets (the latest one sets the zone of "
                                "every forecast)")
        if series.dayfirst is not None and run.config.data.dayfirst is None:
            raise NotStreamable("its dates are written day/month or month/day (the whole file tells which)")
        zones.add(str(series.starts[0].tz) if len(series) else "None")
        if len(zones) > 1:
            raise NotStreamable(f"its timestamps have several UTC offsets ({', '.join(sorted(zones))})")
        yield series
