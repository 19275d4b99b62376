"""Batch prediction on Ray Data (the `ray` extra): the same forecasts as `lstmcast predict`, value
for value and byte for byte, with each actor loading the run once. One local Ray of 2 CPUs for
the module (starting it takes seconds); the tests that need no Ray run without it.

Every step on Ray (its start, each test, its shutdown) has a deadline (RAY_SECONDS): a hung Ray
fails its test instead of eating CI's time. pytest-timeout is not a dependency; deadline() is a
SIGALRM in the main thread, with faulthandler ending the process should Ray hold that thread in C
and never let the failure be raised."""

from __future__ import annotations

import contextlib
import faulthandler
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SALES, error_line, run_cli

from lstmcast.errors import LstmcastError
from lstmcast.predict import predict, shard_of
from lstmcast.raydata import Forecaster

ROOT = Path(__file__).resolve().parents[1]
_no_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                             reason="ray is not installed: pip install 'lstmcast[ray]' (make test installs it)")


def needs_ray(test):
    """A test that runs on Ray: skipped without it, failed past its deadline (ray_deadline)."""
    return _no_ray(pytest.mark.usefixtures("ray_deadline")(test))


ACTORS, SHARDS = 2, 5
# Ids that a number-guessing reader would change ('007' -> 7, '1e3' -> 1000.0); the rest as sampled.
RENAMED = {"store_01": "007", "store_02": "7", "store_03": "1e3", "store_04": "0.50"}


@pytest.fixture(scope="module")
def text_ids(tmp_path_factory) -> Path:
    """The sales sample with ids that look like numbers: 12 series, more than SHARDS batches."""
    frame = pd.read_csv(SALES, dtype={"unique_id": str})
    frame["unique_id"] = frame["unique_id"].replace(RENAMED)
    path = tmp_path_factory.mktemp("ray-data") / "sales_text_ids.csv"
    frame.to_csv(path, index=False)
    return path


RAY_SECONDS = 300   # Ray's start or shutdown, or one test on it (seconds each here): minutes more is a hang
GRACE_SECONDS = 60  # then, if the failure could not be raised, every thread's stack and the process ends


@contextlib.contextmanager
def deadline(seconds: int, what: str):
    """Fail `what` once it has run `seconds`: SIGALRM raises pytest's Failed (a BaseException, so
    neither the CLI nor Ray's `except Exception` swallows it) in the main thread. Should Ray hold
    that thread in C code, the handler never runs: GRACE_SECONDS later faulthandler prints every
    thread's traceback and ends the process (exit 1), a failed job rather than a hung one."""
    if not hasattr(signal, "SIGALRM"):   # Windows: no alarm; CI runs Linux
        yield
        return

    def expired(signum, frame):
        pytest.fail(f"{what} still running after {seconds} s: Ray hung (tests/test_ray.py deadline)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    faulthandler.dump_traceback_later(seconds + GRACE_SECONDS, exit=True)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def ray_deadline(request):
    """Each test that runs on Ray, within RAY_SECONDS."""
    with deadline(RAY_SECONDS, request.node.name):
        yield


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="no SIGALRM on this platform")
def test_a_step_past_its_deadline_fails_and_leaves_no_alarm():
    before = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="a sleep still running after 1 s: Ray hung"):
        with deadline(1, "a sleep"):
            time.sleep(5)
    assert time.monotonic() - started < 4                              # failed at the deadline, not after
    assert signal.getsignal(signal.SIGALRM) is before                  # the handler restored
    assert signal.alarm(0) == 0                                        # no alarm left behind


def _count_loads():
    """Ray's worker setup hook: each load of a run (load_run reads the run's config.yaml once)
    leaves a file named by the worker's pid in LSTMCAST_TEST_LOADS. Patched in lstmcast.config
    before lstmcast.predict imports read_yaml from it; importing config loads no torch."""
    import lstmcast.config as config

    original, folder = config.read_yaml, os.environ["LSTMCAST_TEST_LOADS"]

    def counting(path, *args, **kwargs):
        if Path(path).name == "config.yaml":
            Path(folder, f"{os.getpid()}-{time.monotonic_ns()}").touch()
        return original(path, *args, **kwargs)

    config.read_yaml = counting


@pytest.fixture(scope="module")
def ray_loads(tmp_path_factory):
    """A local Ray of 2 CPUs for the module; yields the folder where workers record run loads."""
    import ray

    loads = tmp_path_factory.mktemp("loads")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the hook travels by value
    with deadline(RAY_SECONDS, "ray.init"):
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": _count_loads,
                              "env_vars": {"LSTMCAST_TEST_LOADS": str(loads)}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield loads
    with deadline(RAY_SECONDS, "ray.shutdown"):
        ray.shutdown()


def _by_series(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["unique_id", "ds"]).reset_index(drop=True)


@needs_ray
def test_dataset_forecasts_equal_predict(sales_run, text_ids, ray_loads):
    import ray

    from lstmcast.raydata import predict_dataset

    expected = predict(text_ids, sales_run)
    ids = pd.unique(expected["unique_id"])
    assert len(set(shard_of(list(ids), SHARDS))) > ACTORS     # more batches than actors, more series than batches
    for old in ray_loads.iterdir():
        old.unlink()
    rows = ray.data.from_pandas(pd.read_csv(text_ids, dtype={"unique_id": str}))
    got = predict_dataset(rows, sales_run, concurrency=ACTORS, num_cpus_per_actor=0.5, shards=SHARDS).to_pandas()

    assert list(got.columns) == list(expected.columns)
    got, expected = _by_series(got), _by_series(expected)
    assert list(got["unique_id"]) == list(expected["unique_id"])       # '007' stays '007', text for text
    assert {"007", "7", "1e3", "0.50"} <= set(got["unique_id"])
    assert (pd.DatetimeIndex(got["ds"]) == pd.DatetimeIndex(expected["ds"])).all()
    assert np.array_equal(got["forecast"].to_numpy(np.float64), expected["forecast"].to_numpy(np.float64))
    loads = list(ray_loads.iterdir())
    assert 1 <= len(loads) <= ACTORS, sorted(p.name for p in loads)      # once per actor, not per batch


@needs_ray
def test_cli_ray_writes_the_same_bytes(sales_run, text_ids, ray_loads, tmp_path):
    plain, on_ray = tmp_path / "plain.csv", tmp_path / "ray.csv"
    assert run_cli("predict", text_ids, "--model", sales_run, "--out", plain).exit_code == 0
    result = run_cli("predict", text_ids, "--model", sales_run, "--out", on_ray, "--ray")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"wrote 144 forecasts (12 series x 12 steps, on Ray) to {on_ray}"]
    assert on_ray.read_bytes() == plain.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.csv", "ray.csv"]   # no temporary left


@needs_ray
def test_unreachable_address_is_one_line_at_once(sales_run, tmp_path):
    """ray.init would retry for minutes, a warning every few seconds."""
    result = run_cli("predict", SALES, "--model", sales_run, "--out", tmp_path / "f.csv", "--ray",
                     "--ray-address", "127.0.0.1:1")
    error_line(result, "--ray-address 127.0.0.1:1: no Ray cluster answers there", "ray start --head")
    assert not (tmp_path / "f.csv").exists()


def test_forecaster_maps_a_batch_of_whole_series_as_predict(sales_run, text_ids):
    """The actor's work without Ray: a batch of some whole series forecasts them as predict does."""
    expected = predict(text_ids, sales_run)
    rows = pd.read_csv(text_ids, dtype={"unique_id": str})
    batch = rows[rows["unique_id"].isin(["007", "store_05", "1e3"])].assign(__lstmcast_shard=3)
    got = Forecaster(sales_run)(batch)
    want = expected[expected["unique_id"].isin(["007", "store_05", "1e3"])]
    pd.testing.assert_frame_equal(_by_series(got), _by_series(want))
    assert Forecaster(sales_run, horizon=4)(batch.iloc[:0]).shape == (0, 3)   # an empty batch: no rows


def test_rows_of_one_series_share_a_batch():
    """The shard is that of the id as the reader sees it: ' 007' and '007' are one series."""
    from lstmcast.raydata import SHARD_COLUMN, _with_shard

    rows = pd.DataFrame({"unique_id": [" 007", "007 ", "007", "7"], "y": [1.0, 2.0, 3.0, 4.0]})
    shards = _with_shard(rows, "unique_id", 1000)[SHARD_COLUMN].tolist()
    assert shards[:3] == [shard_of(["007"], 1000)[0]] * 3 and shards[3] == shard_of(["7"], 1000)[0] != shards[0]


def test_forecaster_refuses_times_a_batch_would_read_unlike_the_file(sales_run):
    """Several UTC offsets: the forecasts' zone would follow each batch's own latest timestamp."""
    rows = pd.read_csv(SALES).head(60)
    rows["ds"] = rows["ds"] + "T00:00" + np.where(rows.index % 2, "+01:00", "+02:00")
    with pytest.raises(LstmcastError, match=r"Ray batch, column 'ds': timestamps in \+0[12]:00; .*UTC"):
        Forecaster(sales_run)(rows)


def test_without_ray_one_line_and_exit_2(sales_run, tmp_path):
    code = ("import sys\nsys.modules['ray'] = None\nfrom lstmcast.cli import main\n"
            f"sys.argv = ['lstmcast', 'predict', {str(SALES)!r}, '--model', {str(sales_run)!r}, "
            f"'--out', {str(tmp_path / 'f.csv')!r}, '--ray']\nmain()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["lstmcast: error: --ray needs Ray Data, which is not installed: "
                                        "pip install 'lstmcast[ray]'"]
    assert not (tmp_path / "f.csv").exists()


def test_import_lstmcast_does_not_load_ray():
    code = "import sys, lstmcast, lstmcast.cli, lstmcast.predict\nprint('ray' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.split() == ["False"], done.stderr


@pytest.mark.parametrize("extra, fragment", [
    (["--ray-address", "auto"], "--ray-address needs --ray"),
    (["--ray", "--shard", "0/2"], "--shard and --ray"),
    (["--ray", "--device", "cuda"], "drop --device"),
])
def test_ray_option_clashes_are_one_line(sales_run, tmp_path, extra, fragment):
    result = run_cli("predict", SALES, "--model", sales_run, "--out", tmp_path / "f.csv", *extra)
    error_line(result, fragment)
