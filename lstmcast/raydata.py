"""Batch prediction on Ray Data (the `ray` extra: pip install 'lstmcast[ray]').

The rows of a dataset (long: id, time, value, covariates) are grouped into whole-series batches
by `shard_of`, the stable hash of `predict --shard`, and each batch is forecast by an actor of a
pool that loaded the run once (`Forecaster`), with the same code as `lstmcast predict`: the
forecasts are the single-process ones, value for value.

A batch decides nothing for the whole dataset, so what a file decides as a whole (the day/month
order of 01/02/2021, the zone of timestamps with several UTC offsets) must be fixed before the
batches: `dayfirst` is the run's or given, and timestamps are naive or UTC. `predict_file`, the
command line's `--ray`, reads and validates the file on the driver as `predict` does and hands
Ray the validated series, so there every input `predict` takes works and the output file is the
same bytes.

Ray is imported here only, when used: `import lstmcast` never loads it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .csvread import _OFFSET
from .errors import LstmcastError
from .predict import Run, check_horizon, forecast, forecast_frame, load_run, read_for_run, shard_of

SHARD_COLUMN = "__lstmcast_shard"   # added to group the rows; never in an output
BATCH_NAME = "Ray batch"             # what messages call a batch (its rows numbered from 1)
_UTC_OFFSETS = frozenset({"Z", "+00:00", "-00:00", "+0000", "-0000", "+00", "-00"})


def import_ray():
    """The ray module with Ray Data, or the one-line error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the data extra has no pyarrow, no ray.data)
    except ImportError:
        raise LstmcastError("--ray needs Ray Data, which is not installed: pip install 'lstmcast[ray]'") from None
    return ray


def check_ray_run(run: Run) -> None:
    """The runs a Ray batch can forecast: series in long rows, no --future file."""
    if not run.columns.id_in_input:
        raise LstmcastError(f"{run.path}: this run reads a wide file (one series per column); Ray groups rows "
                            f"by series id, so predict it without --ray")
    if run.features is not None and run.features.future:
        raise LstmcastError(f"{run.path}: this run reads future covariates (--future), which the Ray path "
                            f"does not take; predict it without --ray")
    if len(run.columns.targets) != 1:
        raise LstmcastError(f"{run.path}: this run reads {len(run.columns.targets)} target columns; Ray groups "
                            f"rows of one target by series id, so predict it without --ray")


class Forecaster:
    """Forecasts batches of whole series with one run, loaded once: a Ray Data callable class,
    so each actor of the pool loads the model once and maps batch after batch.

    `batch` (a pandas DataFrame) holds every row of each of its series (the rows of a series are
    never split between batches); the result has one row per series and step, as `predict`'s.
    `dayfirst`: how to read 01/02/2021 text (None: the run's data.dayfirst)."""

    def __init__(self, run_dir: str | Path, horizon: int | None = None, device: str = "cpu",
                 dayfirst: bool | None = None):
        self.run = load_run(run_dir, device)
        check_ray_run(self.run)
        self.steps = check_horizon(self.run, horizon)
        self.dayfirst = self.run.config.data.dayfirst if dayfirst is None else dayfirst

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        frame = batch.drop(columns=[SHARD_COLUMN]) if SHARD_COLUMN in batch.columns else batch
        if frame.empty:
            return forecast_frame(self.run, _no_series(self.run), self._no_values())
        check_batch_times(frame, self.run.columns.time_col)
        series = read_for_run(self.run, frame, dayfirst=self.dayfirst, name=BATCH_NAME)
        if self.dayfirst is None and series.dayfirst is not None:
            raise LstmcastError(f"{BATCH_NAME}: day/month/year timestamps and no data.dayfirst: each batch would "
                                f"decide the order from its own rows; pass dayfirst=True or False")
        return forecast_frame(self.run, series, forecast(self.run, series, self.steps))

    def _no_values(self) -> np.ndarray:
        levels = self.run.levels
        return np.zeros((0, self.steps) + ((len(levels),) if levels else ()))


def _no_series(run: Run):
    from .data import SeriesSet
    return SeriesSet(run.columns, run.freq, [], [], [])


def check_batch_times(frame: pd.DataFrame, time_col: str) -> None:
    """Timestamps a batch reads as the whole dataset would: naive or UTC. With other offsets the
    zone forecasts are written in (and, for several offsets, the grid) would follow the batch's
    own latest timestamp."""
    if time_col not in frame.columns:
        return   # read_for_run names the missing column
    column = frame[time_col]
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        offsets = [] if str(column.dtype.tz) == "UTC" else [str(column.dtype.tz)]
    else:
        text = pd.Series(pd.unique(column.dropna()), dtype=object).astype(str).str.strip()
        offsets = [o for o in text.str.extract(_OFFSET)[0].dropna().unique() if o not in _UTC_OFFSETS]
    if offsets:
        raise LstmcastError(f"{BATCH_NAME}, column '{time_col}': timestamps in {offsets[0]}; on Ray each batch "
                            f"would choose the forecasts' zone from its own rows: convert them to UTC (or "
                            f"naive local time) first, or use 'lstmcast predict ... --ray', which reads the file whole")


def _with_shard(batch: pd.DataFrame, id_col: str, shards: int) -> pd.DataFrame:
    """The batch with each row's shard: that of its id as the reader will see it (as text, blanks
    around it removed), so that ' 007' and '007', one series to the reader, share a batch."""
    ids = batch[id_col].astype(object).where(batch[id_col].notna(), "").astype(str).str.strip()
    return batch.assign(**{SHARD_COLUMN: shard_of(list(ids), shards)})


def predict_dataset(ds, run_dir: str | Path, *, horizon: int | None = None, dayfirst: bool | None = None,
                    concurrency: int | tuple[int, int] | None = None, num_cpus_per_actor: float = 1,
                    shards: int | None = None):
    """Forecast every series of the Ray Dataset `ds` (long rows: the run's id, time, value and
    covariate columns) with the run in `run_dir`: a Dataset of predict's forecast rows (in no
    particular order).

    Rows are grouped by series into `shards` whole-series batches (default: 4 per CPU of the
    cluster; each must fit in a worker's memory) and mapped by a pool of `Forecaster` actors,
    each loading the run once: `concurrency` of them (an int: a fixed pool; (min, max): an
    autoscaling one; None: 1 up to what the cluster's CPUs but one hold), each with
    `num_cpus_per_actor` CPUs. A pool must leave a CPU free for the grouping tasks, or it waits
    for them forever (a fixed pool of 2 one-CPU actors on 2 CPUs does)."""
    ray = import_ray()
    run = load_run(run_dir, "cpu")   # the run and the horizon checked here, before any Ray work
    check_ray_run(run)
    check_horizon(run, horizon)
    id_col = run.columns.id_col
    names = list(ds.schema().names)
    if id_col not in names or run.columns.time_col not in names:
        missing = id_col if id_col not in names else run.columns.time_col
        raise LstmcastError(f"the dataset has no column '{missing}' (columns: {', '.join(names)}); the run was "
                            f"trained on that column, so the data needs it too")
    if SHARD_COLUMN in names:
        raise LstmcastError(f"the dataset has a column '{SHARD_COLUMN}', the name lstmcast groups rows by; rename it")
    return _pipeline(ray, ds, run, run_dir, horizon=horizon, dayfirst=dayfirst, concurrency=concurrency,
                     num_cpus_per_actor=num_cpus_per_actor, shards=shards)


def _pipeline(ray, ds, run: Run, run_dir: str | Path, *, horizon, dayfirst, concurrency, num_cpus_per_actor,
              shards):
    """shard column -> groups of whole series -> Forecaster actors (each loads the run once)."""
    if shards is None:
        shards = max(1, 4 * int(ray.cluster_resources().get("CPU", 1)))
    if isinstance(concurrency, int):
        compute = ray.data.ActorPoolStrategy(size=concurrency)
    elif concurrency is not None:
        compute = ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    else:   # one CPU is left to the tasks that group the rows: a pool holding all would wait on them forever
        cpus = int(ray.cluster_resources().get("CPU", 1))
        compute = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int((cpus - 1) / num_cpus_per_actor)))
    # The shard column is cheap: a fraction of a CPU, so that it runs beside a pool that holds the rest.
    keyed = ds.map_batches(_with_shard, batch_format="pandas", num_cpus=0.25,
                           fn_kwargs={"id_col": run.columns.id_col, "shards": shards})
    return keyed.groupby(SHARD_COLUMN, num_partitions=shards).map_groups(
        Forecaster, batch_format="pandas", compute=compute, num_cpus=num_cpus_per_actor, max_restarts=0,
        fn_constructor_kwargs={"run_dir": str(Path(run_dir).resolve()), "horizon": horizon, "dayfirst": dayfirst})


def predict_file(data_path: str | Path, run_dir: str | Path, out_path: str | Path | None = None, *,
                 horizon: int | None = None, address: str | None = None,
                 concurrency: int | tuple[int, int] | None = None, num_cpus_per_actor: float = 1,
                 shards: int | None = None) -> pd.DataFrame:
    """`lstmcast predict DATA --ray`: DATA is read and validated here, as `predict` reads it (every
    input predict takes, with its messages), its series forecast on Ray (`address`: a running
    cluster's, e.g. 'auto'; None: RAY_ADDRESS if set, else a local Ray started for this call and
    shut down after it), and OUT written as predict writes it: the same rows in the same order,
    the same bytes."""
    from .outputs import write_table
    from .rundir import check_output
    from .spatial import is_grid_run

    if is_grid_run(run_dir):
        raise LstmcastError("--ray: a gridded (ConvLSTM) run forecasts whole frames, not series; drop --ray")
    if out_path is not None:  # before any work: a bad --out is found at once
        check_output(out_path, [data_path], run_dir)
    ray = import_ray()
    run = load_run(run_dir, "cpu")
    check_ray_run(run)
    check_horizon(run, horizon)
    series = read_for_run(run, data_path)
    with warnings.catch_warnings():
        # Ray's own deprecation notices (e.g. its pandas calls under pandas 3) are Ray's to fix,
        # not a line for the user of this command.
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        started = _connect(ray, address)
        try:
            rows = ray.data.from_pandas(_rows_of(run, series))
            out = _pipeline(ray, rows, run, run_dir, horizon=horizon, dayfirst=None, concurrency=concurrency,
                            num_cpus_per_actor=num_cpus_per_actor, shards=shards).to_pandas()
        finally:
            if started:
                ray.shutdown()
    frame = _as_predict_writes(run, series, out)
    if out_path is not None:
        write_table(out_path, frame)   # Parquet by suffix, else CSV: what predict writes
    return frame


def _connect(ray, address: str | None) -> bool:
    """Connect to Ray (quietly: no progress bars, no log lines); True when this call started it."""
    import logging

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)   # no "Starting execution" lines on stderr, no notices
    given = address or os.environ.get("RAY_ADDRESS")
    _check_reachable(given, "--ray-address" if address else "RAY_ADDRESS")
    if ray.is_initialized():   # this process's own ray.init (Python use): its cluster, never another
        if address is not None:
            raise LstmcastError(f"address {address}: Ray is already initialized in this process; drop the "
                                f"address, or call ray.shutdown() first")
        return False
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:   # no cluster there, a malformed address
        where = f"--ray-address {address}" if address else "RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else "Ray"
        raise LstmcastError(f"{where}: cannot connect to a Ray cluster ({' '.join(str(exc).split())}); start one "
                            f"with 'ray start --head' or check the address") from None
    return True


def _check_reachable(address: str | None, option: str) -> None:
    """A HOST:PORT address that nothing answers on is one line at once: ray.init would retry for
    minutes, logging a warning every few seconds. ('auto', ray://... are Ray's to resolve.)"""
    import socket

    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10):
            pass
    except ValueError:
        raise LstmcastError(f"{option} {address}: write it as HOST:PORT (e.g. 10.0.0.5:6379) or auto") from None
    except OSError as exc:
        raise LstmcastError(f"{option} {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                            f"with 'ray start --head' or check the address") from None


def _rows_of(run: Run, series) -> pd.DataFrame:
    """The validated series as long rows (id, naive time, value, covariates) that every batch reads
    alike: times as wall-clock times in the zone they are held in (_as_predict_writes puts it back)."""
    cols = run.columns
    times = series.times()
    rows = {cols.id_col: np.repeat(np.array(series.ids, dtype=object), series.lengths()),
            cols.time_col: times.tz_localize(None) if times.tz is not None else times,
            cols.targets[0]: np.concatenate(series.values)}
    for k, name in enumerate(series.covariate_names):
        rows[name] = np.concatenate([c[:, k] for c in series.covariates])
    return pd.DataFrame(rows)


def _as_predict_writes(run: Run, series, out: pd.DataFrame) -> pd.DataFrame:
    """Ray's forecast rows (any order, naive times) as predict's frame: series in the file's order,
    each step in time order, times back in the series' zone."""
    cols = run.columns
    position = pd.Series(np.arange(len(series)), index=pd.Index(series.ids, dtype=object))
    ids = np.asarray(out[cols.id_col], dtype=object)
    where = position.reindex(ids).to_numpy()
    steps = len(out) // max(len(series), 1)
    if np.isnan(where).any() or len(out) != steps * len(series) or np.bincount(where.astype(np.int64)).min() != steps:
        raise RuntimeError(f"Ray returned {len(out)} forecast rows for {len(series)} series; expected "
                           f"{steps} per series")   # a bug: every series is forecast once
    times = pd.DatetimeIndex(out[cols.time_col])
    order = np.lexsort((times.asi8, where))
    frame = out.iloc[order].reset_index(drop=True)
    frame[cols.id_col] = ids[order]
    held = series.times()[:1].tz
    times = times[order]
    if held is not None:
        times = times.tz_localize(held)
        times = times.tz_convert(series.zone) if series.zone is not None else times
    frame[cols.time_col] = times
    for name in frame.columns[2:]:   # forecast and q_ columns: Arrow's doubles as numpy's, as predict has them
        frame[name] = frame[name].to_numpy(dtype=np.float64)
    return frame
