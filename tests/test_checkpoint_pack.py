"""Long per-series lists in checkpoints are packed (one string and a tensor of lengths, or a float64
tensor) so that torch.load(weights_only=True) reads them in milliseconds, and come back exactly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SALES, TINY, run_cli

from lstmcast import checkpoint
from lstmcast.checkpoint import PACK_MIN, PACKED_VERSION, load_checkpoint, pack, save_checkpoint, unpack
from lstmcast.run import FORMAT_VERSION

pytestmark = pytest.mark.usefixtures("one_thread")


def payload(n: int) -> dict:
    ids = [f"série {i}" if i % 7 else "" for i in range(n)]          # unicode, empty strings
    stamps = [None if i % 5 == 0 else f"2024-01-{1 + i % 28:02d}" for i in range(n)]
    floats = [float(i) / 3 for i in range(n)]
    floats[:3] = [math.nan, math.inf, -0.0]
    return {"series_ids": ids, "seen": {"train_end": stamps, "refit": [True, False]},
            "scaler": {"method": "standard", "ids": ids, "loc": floats, "scale": [1.0] * n},
            "models": [{"w": torch.ones(3)}], "small": ["a", "b"], "ints": list(range(n)), "freq": "D"}


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return type(a) is type(b) and a == b


def test_pack_and_unpack_round_trip_exactly():
    original = payload(PACK_MIN + 5)
    packed, any_packed = pack(original)
    assert any_packed
    assert packed["series_ids"]["__lstmcast_packed__"] == "str" and packed["small"] == ["a", "b"]
    assert packed["scaler"]["loc"]["values"].dtype == torch.float64
    assert packed["ints"] is original["ints"] and packed["seen"]["refit"] == [True, False]  # left alone
    assert same(unpack(packed), original)
    small = payload(PACK_MIN - 1)
    assert pack(small) == (small, False)


def test_a_packed_checkpoint_is_format_5_loads_with_weights_only_and_unpacks(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(payload(3000), path)
    raw = torch.load(path, weights_only=True)                 # still a plain dict, no GPU, no pickle classes
    assert raw["format_version"] == PACKED_VERSION and raw["unpacked_version"] == FORMAT_VERSION
    assert isinstance(raw["series_ids"]["text"], str)
    loaded = load_checkpoint(path)
    assert loaded["format_version"] == FORMAT_VERSION and "unpacked_version" not in loaded
    assert same({k: v for k, v in loaded.items() if k != "format_version"}, payload(3000))
    save_checkpoint(payload(10), path)                        # a small run: exactly as before
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION and raw["series_ids"] == payload(10)["series_ids"]


def test_a_run_saved_packed_forecasts_what_the_unpacked_run_forecasts(tmp_path, monkeypatch):
    """The 12-series sample with PACK_MIN lowered to 4: every per-series list of the run is packed;
    predict reads it back and forecasts the same numbers, bit for bit; resume and evaluate read it."""
    outs = {}
    for name, minimum in (("plain", PACK_MIN), ("packed", 4)):
        monkeypatch.setattr(checkpoint, "PACK_MIN", minimum)
        run = tmp_path / name
        done = run_cli("train", SALES, "--out", run, "--set", "train.epochs=2", *TINY)
        assert done.exit_code == 0, done.stderr
        version = torch.load(run / "model.pt", weights_only=True)["format_version"]
        assert version == (PACKED_VERSION if name == "packed" else FORMAT_VERSION)
        done = run_cli("predict", SALES, "--model", run, "--out", tmp_path / f"{name}.csv")
        assert done.exit_code == 0, done.stderr
        outs[name] = pd.read_csv(tmp_path / f"{name}.csv")
    pd.testing.assert_frame_equal(outs["plain"], outs["packed"])
    assert np.isfinite(outs["packed"]["forecast"]).all() and len(outs["packed"]) == 144
    # last.pt packed too: a resume reads it (config, fingerprint, optimizer) and goes on
    done = run_cli("train", SALES, "--out", tmp_path / "packed", "--resume", "--set", "train.epochs=3", *TINY)
    assert done.exit_code == 0, done.stderr
    assert torch.load(tmp_path / "packed" / "last.pt", weights_only=True)["epoch"] == 3
    done = run_cli("evaluate", SALES, "--model", tmp_path / "packed")
    assert done.exit_code == 0, done.stderr
