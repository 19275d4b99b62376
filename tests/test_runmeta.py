"""RunMeta (lstmcast/run.py): the one owner of the checkpoint format and of every migration.

The on-disk checkpoint is unchanged (a plain dict, torch.load(weights_only=True)); these tests pin
that RunMeta writes exactly what is on disk, reads it back equal, and reads each historic format
(1 to 4) into the same in-memory shape.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil

import numpy as np
import pytest
import torch
from conftest import SALES, error_line, run_cli

from lstmcast.checkpoint import BEST, FORMAT_VERSION, LAST, load_checkpoint, save_checkpoint
from lstmcast.config import config_from_dict
from lstmcast.covariates import FeatureSpec
from lstmcast.errors import LstmcastError
from lstmcast.run import READABLE_VERSIONS, RunMeta, config_from_saved, upgrade_payload


def raw(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_to_checkpoint_is_the_dict_on_disk_and_reads_back_equal(sales_run, tmp_path):
    payload = raw(sales_run / BEST)
    meta, models = RunMeta.from_checkpoint(payload)
    assert meta.format_version == FORMAT_VERSION == 4 and READABLE_VERSIONS == (1, 2, 3, 4)
    written = meta.to_checkpoint(models)
    # Same keys, in the same order, with the same values as train wrote (format_version is save's).
    assert list(written) == [k for k in payload if k != "format_version"]
    assert written["models"] is models
    assert all(written[k] == payload[k] for k in written if k != "models")
    again, again_models = RunMeta.from_checkpoint({"format_version": FORMAT_VERSION, **written})
    assert again == meta and again_models is models
    assert again.config == meta.config and again.columns == meta.columns and again.freq == meta.freq
    np.testing.assert_array_equal(again.scaler.loc, meta.scaler.loc)
    # Still a plain dict: save_checkpoint writes it, torch.load(weights_only=True) reads it.
    save_checkpoint(written, tmp_path / "model.pt")
    back = raw(tmp_path / "model.pt")
    assert RunMeta.from_checkpoint(back)[0] == meta
    assert RunMeta.from_checkpoint(back)[0] != dataclasses.replace(meta, freq="D")


def test_last_pt_keeps_its_layout(sales_run):
    """last.pt: the run's keys, no "models", then the resumable state (train passes models=None)."""
    last = raw(sales_run / LAST)
    meta, _ = RunMeta.from_checkpoint(raw(sales_run / BEST))
    state = {k: last[k] for k in last if k not in meta.to_checkpoint(None) and k != "format_version"}
    assert "model" in state and "optimizer" in state and "models" not in last
    rebuilt = dataclasses.replace(meta, conformal=None).to_checkpoint(None, **state)
    assert list(rebuilt) == [k for k in last if k != "format_version"]


# --- each historic format migrates to the same in-memory shape -----------------------------------


@pytest.fixture(scope="module")
def today(sales_run) -> dict:
    """A format 4 payload of a run without covariates or calendar (what formats 1-2 could hold)."""
    payload = raw(sales_run / BEST)
    payload["config"]["data"]["calendar"] = "none"
    payload["features"] = FeatureSpec((), (), "none", payload["freq"], np.zeros(0), np.zeros(0),
                                      list(payload["series_ids"])).to_dict()
    payload.pop("conformal", None)
    return payload


def old_format(payload: dict, version: int) -> dict:
    """`payload` as lstmcast wrote it in format `version` (the tests' own fixtures do the same)."""
    old = copy.deepcopy(payload)
    old["format_version"] = version
    if version <= 3:
        del old["seen"]
    if version <= 2:
        del old["features"]
        for key in ("past_covariates", "future_covariates", "calendar"):
            del old["config"]["data"][key]
        del old["config"]["model"]["series_embedding"]
    if version == 1:
        old["model"] = old.pop("models")[0]
    return old


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_each_format_migrates_to_the_same_shape(today, version):
    meta4, models4 = RunMeta.from_checkpoint(today)
    meta, models = RunMeta.from_checkpoint(old_format(today, version))
    assert meta.format_version == version
    expected = dataclasses.replace(meta4, format_version=version,
                                   seen=meta4.seen if version >= 4 else None)   # formats 1-3: unknown
    assert meta == expected
    assert meta.config == meta4.config and meta.config.data.calendar == "none"     # not today's auto
    assert meta.features.n_extra == 0 and meta.features.series_ids == meta4.series_ids
    assert meta.features.dims() == meta4.features.dims()
    assert (meta.in_sample_record is None) == (version < 4)
    assert meta.conformal is None
    assert len(models) == len(models4)
    assert models[0].keys() == models4[0].keys()
    assert all(torch.equal(models[0][k], models4[0][k]) for k in models4[0])


def test_format_1_loads_through_load_checkpoint(today, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(old_format(today, 1), path)
    payload = load_checkpoint(path, require=("config", "models", "scaler", "columns", "freq"),
                              upgrade=upgrade_payload)
    assert "model" not in payload and len(payload["models"]) == 1
    assert upgrade_payload(payload) is payload   # idempotent
    with pytest.raises(LstmcastError, match="missing models"):
        load_checkpoint(path, require=("models",))   # without the upgrade: the old layout


def test_re_saved_old_payload_still_migrates_by_its_keys(today):
    """Format 4 on disk, but without "features" or data.calendar (an old run re-saved): calendar none."""
    meta, _ = RunMeta.from_checkpoint({**old_format(today, 2), "format_version": 4})
    assert meta.config.data.calendar == "none" and meta.features.n_extra == 0


def test_saved_config_migration():
    tree = {"data": {"horizon": 3}}
    assert config_from_saved(tree).data.calendar == "none"
    assert config_from_dict(tree).data.calendar == "auto"    # the migration is run.py's, not config's
    assert config_from_saved({"data": {"horizon": 3, "calendar": "auto"}}).data.calendar == "auto"


# --- a format from the future ---------------------------------------------------------------------


def test_unknown_future_format_is_a_one_line_error(sales_run, tmp_path):
    payload = raw(sales_run / BEST)
    with pytest.raises(LstmcastError, match="format 6 is not supported") as info:
        RunMeta.from_checkpoint({**payload, "format_version": 6})
    assert "\n" not in str(info.value)
    run = tmp_path / "future"
    shutil.copytree(sales_run, run)
    torch.save({**payload, "format_version": 6}, run / BEST)
    error_line(run_cli("predict", SALES, "--model", run, "--out", tmp_path / "f.csv"), "format 6", "not supported")
    # format 5 is a packed format 4 (checkpoint.pack): without what it unpacks to, it is refused too
    torch.save({**payload, "format_version": 5}, run / BEST)
    error_line(run_cli("predict", SALES, "--model", run, "--out", tmp_path / "f.csv"), "format 5", "not supported")
