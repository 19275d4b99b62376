"""Training under torchrun (distributed.py): two CPU processes under gloo train one model.

Each launch is a subprocess with a hard timeout, so a hang fails the test. Most launches set
torchrun's environment themselves (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT) and start one
`python` per rank, so each rank's exit code and output can be read apart; one resume goes
through torchrun itself. The runs are made once per module (the `runs` fixture) and shared.

Each rank of the 2-rank run saves the weights it ended with through a wrapper of train._finalize
installed by the launch code (RANK_DUMP), not by anything in lstmcast.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds per launch: a hang fails here
SETTINGS = {"train.recipe": "none", "model.hidden_size": 8, "model.layers": 1, "model.dropout": 0,
            "train.batch_size": 16, "train.epochs": 2, "data.horizon": 6, "train.seed": 3, "train.lr": 0.01}
RANK_DUMP = """
import importlib, sys, torch
train = importlib.import_module("lstmcast.train")  # the module (lstmcast.train is the function)
finalize, path = train._finalize, sys.argv.pop(1)
def dump(run, fit, runtime, emit):
    torch.save(run.done, path.format(rank=runtime.ranks.rank))
    return finalize(run, fit, runtime, emit)
train._finalize = dump
from lstmcast.cli import main
main()
"""


def sets(**changes) -> list[str]:
    return [arg for key, value in {**SETTINGS, **changes}.items() for arg in ("--set", f"{key}={value}")] + [
        "--time-budget", "none"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra) -> dict:
    # One thread per process, as torchrun sets it: 2 shared cores, and the same arithmetic everywhere.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", **extra}


def launch(world: int, args: list[str], code: str | None = None, cwd: Path = ROOT) -> list[subprocess.CompletedProcess]:
    """`python -m lstmcast ARGS` (or `python -c code ARGS`) on `world` ranks, as torchrun starts them."""
    port, procs = free_port(), []
    for rank in range(world):
        env = environment(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)) if world > 1 else environment()
        command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "lstmcast"]
        procs.append(subprocess.Popen([*command, *map(str, args)], env=env, cwd=cwd, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        outputs = [proc.communicate(timeout=TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    return [subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            for proc, (out, err) in zip(procs, outputs)]


def torchrun(world: int, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world),
                           "--master-port", str(free_port()), "-m", "lstmcast", *map(str, args)],
                          env=environment(), cwd=ROOT, text=True, capture_output=True, timeout=TIMEOUT)


def tiny_csv(path: Path) -> Path:
    """5 monthly series of 61 points: an odd number of training windows, so the last batch of an
    epoch splits unevenly between two ranks."""
    rng = np.random.default_rng(0)
    ds = pd.date_range("2015-01-01", periods=61, freq="MS")
    frames = [pd.DataFrame({"unique_id": f"s{k}", "ds": ds,
                            "y": 10 + k + 3 * np.sin(np.arange(61) * np.pi / 6) + rng.normal(0, 0.3, 61)})
              for k in range(5)]
    pd.concat(frames).to_csv(path, index=False, float_format="%.4f")
    return path


def weights(run: Path, name: str = "model.pt") -> dict:
    payload = torch.load(run / name, map_location="cpu", weights_only=True)
    return payload["models"][0] if "models" in payload else payload["model"]


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """one: 1 process; two: 2 ranks (each rank's final weights in rank{r}.pt); then, 2 more epochs:
    two_then_one resumes `two` with 1 process, one_then_two resumes `one` with torchrun's 2."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = tiny_csv(tmp / "tiny.csv")
    one = launch(1, ["train", data, "--out", tmp / "one", *sets()])
    two = launch(2, [str(tmp / "rank{rank}.pt"), "train", data, "--out", tmp / "two", *sets()], code=RANK_DUMP)
    shutil.copytree(tmp / "two", tmp / "two_then_one")
    shutil.copytree(tmp / "one", tmp / "one_then_two")
    more = ["--resume", "--set", "train.epochs=4"]
    two_then_one = launch(1, ["train", data, "--out", tmp / "two_then_one", *more])
    one_then_two = torchrun(2, ["train", data, "--out", tmp / "one_then_two", *more])
    return {"tmp": tmp, "data": data, "one": one, "two": two, "two_then_one": two_then_one,
            "one_then_two": one_then_two}


def test_every_launch_succeeds(runs):
    for name in ("one", "two", "two_then_one"):
        for rank, done in enumerate(runs[name]):
            assert done.returncode == 0, (name, rank, done.stderr)
    assert runs["one_then_two"].returncode == 0, runs["one_then_two"].stderr


def test_both_ranks_end_with_the_same_weights(runs):
    rank0, rank1 = (torch.load(runs["tmp"] / f"rank{r}.pt", weights_only=True)[0] for r in (0, 1))
    assert_close(rank0, rank1, atol=0)
    assert_close(rank0, weights(runs["tmp"] / "two"), atol=0)  # what rank 0 wrote


def test_two_ranks_train_what_one_process_trains(runs):
    # Global batch 16: 8 windows per rank, the gradient of all 16 on both; equal up to rounding.
    tmp = runs["tmp"]
    assert_close(weights(tmp / "two"), weights(tmp / "one"), atol=1e-5)
    one, two = (pd.read_csv(tmp / name / "history.csv") for name in ("one", "two"))
    np.testing.assert_allclose(two["val_loss"], one["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=1e-5)


def test_rank_0_alone_writes_and_reports(runs):
    tmp = runs["tmp"]
    assert sorted(os.listdir(tmp / "two")) == sorted(os.listdir(tmp / "one"))
    assert sorted(p.name for p in tmp.iterdir()) == sorted(
        ["tiny.csv", "one", "two", "rank0.pt", "rank1.pt", "two_then_one", "one_then_two"])  # no stray files
    rank0, rank1 = runs["two"]
    assert rank1.stdout == rank1.stderr == ""
    assert "epoch 2/2" in rank0.stderr and "run written to" in rank0.stderr
    assert (tmp / "two" / "config.yaml").read_text() == (tmp / "one" / "config.yaml").read_text()


def test_resume_at_another_world_size(runs):
    tmp = runs["tmp"]
    merged = runs["one_then_two"].stderr  # torchrun passes both ranks' output through
    assert merged.count("resuming at epoch 3") == 1 and merged.count("epoch 4/4") == 1
    for name in ("two_then_one", "one_then_two"):
        assert pd.read_csv(tmp / name / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]
    assert_close(weights(tmp / "two_then_one", "last.pt"), weights(tmp / "one_then_two", "last.pt"), atol=1e-5)


def test_a_batch_the_ranks_cannot_split_is_one_error(runs):
    rank0, rank1 = launch(2, ["train", runs["data"], "--out", runs["tmp"] / "odd", *sets(**{"train.batch_size": 15})])
    assert rank0.returncode == rank1.returncode == 2
    assert rank0.stderr.splitlines() == ["lstmcast: error: train.batch_size 15: not divisible by the 2 ranks of this "
                                         "launch; use a multiple of 2 (each rank trains batch_size / 2 windows of "
                                         "every step)"]
    assert rank1.stderr == rank0.stdout == rank1.stdout == ""
    assert not (runs["tmp"] / "odd").exists()


def test_an_error_on_one_rank_alone_ends_every_rank(runs, tmp_path):
    # Rank 1's data file is missing (a node without it): rank 0 says so, and neither waits.
    code = ("import os, sys\nif os.environ['RANK'] == '1': sys.argv[2] += '.missing'\n"
            "from lstmcast.cli import main\nmain()")
    rank0, rank1 = launch(2, ["train", runs["data"], "--out", tmp_path / "run", *sets()], code=code)
    assert rank0.returncode == rank1.returncode == 2
    [line] = rank0.stderr.splitlines()
    assert line.startswith("lstmcast: error: rank 1: ") and "tiny.csv.missing" in line, line
    assert rank1.stderr == ""
    assert not (tmp_path / "run").exists()
