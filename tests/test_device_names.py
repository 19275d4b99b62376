"""Device names: train (train.device, --device) and predict/evaluate/plot (--device) accept the
same names, cuda:N included, and check each by allocating on it."""

from __future__ import annotations

import pytest
import torch
from conftest import SALES, TINY, error_line, run_cli

from lstmcast.config import load_config
from lstmcast.device import resolve_device
from lstmcast.errors import LstmcastError

# A GPU index no machine running these tests has: cuda:N for N = the number of GPUs.
MISSING_GPU = f"cuda:{torch.cuda.device_count()}"


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "mps", "cuda:0", "cuda:1", "cuda:12"])
def test_config_accepts_device_names(name):
    assert load_config(None, {"train.device": name}).train.device == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:N", "cuda:x", "cuda:-1", "cuda 1", "CPU", "mps:0", "meta"])
def test_config_refuses_other_names(name):
    with pytest.raises(LstmcastError, match=r"train.device' must be one of auto\|cpu\|cuda\|cuda:N\|mps"):
        load_config(None, {"train.device": name})


@pytest.mark.parametrize("name", ["gpu", "cuda:N", "cuda:x", "meta"])
def test_resolve_device_refuses_the_same_names(name):
    with pytest.raises(LstmcastError, match=rf"^--device {name}: not a device lstmcast runs on; "
                                            r"use auto\|cpu\|cuda\|cuda:N\|mps$"):
        resolve_device(name)


def test_resolve_device_checks_cuda_n_by_allocating():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(LstmcastError, match=f"no usable {MISSING_GPU} device here"):
        resolve_device(MISSING_GPU)


def test_train_and_predict_treat_a_missing_gpu_alike(tmp_path, sales_run):
    trained = error_line(run_cli("train", SALES, "--out", tmp_path / "run", "--device", MISSING_GPU,
                                 "--set", "train.epochs=1", *TINY))
    predicted = error_line(run_cli("predict", SALES, "--model", sales_run, "--out", tmp_path / "f.csv",
                                   "--device", MISSING_GPU))
    assert trained == predicted == (f"lstmcast: error: --device {MISSING_GPU}: no usable {MISSING_GPU} "
                                    f"device here; use --device auto or cpu")
    assert not (tmp_path / "run").exists() and not (tmp_path / "f.csv").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_and_predict_accept_cuda_n(tmp_path):
    run = tmp_path / "run"
    done = run_cli("train", SALES, "--out", run, "--device", "cuda:0", "--set", "train.epochs=1", *TINY)
    assert done.exit_code == 0, done.stderr
    done = run_cli("predict", SALES, "--model", run, "--out", tmp_path / "f.csv", "--device", "cuda:0")
    assert done.exit_code == 0, done.stderr
