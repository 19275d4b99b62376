"""RunMeta: what a trained run is, besides its weights; the owner of the checkpoint format.

A checkpoint (model.pt, last.pt) stays a plain dict that loads with torch.load(weights_only=True):
RunMeta.to_checkpoint builds it, RunMeta.from_checkpoint reads it back, and checkpoint.py only
moves its bytes (save_checkpoint, load_checkpoint). This module does not import torch, so the CLI
can read a saved config (config_from_saved) before it loads torch.

Format history (FORMAT_VERSION below is the one written today) and every migration, all here:

  format 1  one "model" state dict            -> "models": [that state dict] (upgrade_payload;
            (not last.pt: it has "optimizer")    the "model" key goes)
  formats 1-2  saved config without data.calendar (predates covariates) -> data.calendar "none",
            not today's default auto, which would change what the model reads (migrate_config;
            also for a run's config.yaml and last.pt)
  formats 1-2  no "features" (predates covariates) -> no past or future covariates, the config's
            calendar, no scaling numbers (RunMeta.from_checkpoint)
  any       no "conformal" (runs before quantiles, or without model.conformal) -> None
  formats 1-3  no "seen" -> None: evaluate reports the in-sample points as unknown
  any       no "series_ids" -> [] (no series embedding), no "last_timestamps" -> [] (both
            required when "seen" is present); no "versions" -> {}; no "data_fingerprint" -> None

  format 5  format 4 whose lists of 1,024 or more strings (ids, timestamps) or floats (scaling
            numbers) are packed into one string and an int32 tensor of lengths, or a float64
            tensor (checkpoint.pack): written only by runs with that many series, unpacked by
            load_checkpoint (back to the format it records, "unpacked_version") before anything
            here reads it, so RunMeta never sees 5.

Migrations are keyed on what a payload holds, not only on its format_version, so a payload
re-saved today from an old one (format 4, but still without "features") loads as it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import Config, config_from_dict
from .covariates import FeatureSpec
from .data import Columns
from .errors import LstmcastError
from .scaling import Scaler

# 4: "seen" (per series, the last timestamp the run trained on, early-stopped on and calibrated on;
# validation.seen_by_run); 3: "features" (covariates, calendar, their scaling numbers); 2: "models"
# (one state dict per ensemble member); 1: one "model".
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)   # and 5 on disk: load_checkpoint unpacks it to the format it records

_NO_FEATURES = {"past": [], "future": [], "mean": [], "std": []}   # formats 1-2, with the config's calendar


def migrate_config(tree: dict) -> dict:
    """A saved config tree (checkpoint, config.yaml) in today's shape: without data.calendar it
    predates covariates, its run had no calendar features, so data.calendar is none."""
    data = tree.get("data")
    if isinstance(data, dict) and "calendar" not in data:
        return {**tree, "data": {**data, "calendar": "none"}}
    return tree


def config_from_saved(tree: dict) -> Config:
    """The Config of a saved config tree (checkpoint or config.yaml), migrated (migrate_config)."""
    return config_from_dict(migrate_config(tree))


def upgrade_payload(payload: dict) -> dict:
    """The weights of a checkpoint in today's layout: a format 1 model.pt held one "model", today
    "models" holds one state dict per ensemble member. Idempotent; the other entries unchanged."""
    if payload.get("format_version") == 1 and "model" in payload and "optimizer" not in payload:
        payload = {key: value for key, value in payload.items() if key != "model"} | {"models": [payload["model"]]}
    return payload


def check_format(version: Any, where: str = "checkpoint") -> None:
    """A one-line error for a format this lstmcast cannot read (a newer lstmcast wrote it)."""
    if version not in READABLE_VERSIONS:
        raise LstmcastError(f"{where} format {version!r} is not supported by this lstmcast "
                            f"(format {FORMAT_VERSION}); retrain or use a matching version")


@dataclass(eq=False)
class RunMeta:
    """Everything a checkpoint records besides the weights, in memory, whatever format it was."""

    config: Config
    scaler: Scaler
    columns: Columns
    freq: str
    series_ids: list[str]
    last_timestamps: list[str]          # per series, ISO timestamp of its last point
    versions: dict                      # {"lstmcast": ..., "torch": ...} that trained it
    data_fingerprint: str | None
    features: FeatureSpec               # covariates, calendar and their scaling numbers
    seen: dict | None = None            # validation.seen_by_run; None: format < 4 (unknown)
    conformal: dict | None = None       # validation.calibrate's corrections; None: none
    format_version: int = FORMAT_VERSION   # the format it was read from

    def to_checkpoint(self, models: list[dict] | None, **state: Any) -> dict:
        """The plain dict save_checkpoint writes: the run's keys, "models" (None: left out, as in
        last.pt, whose weights are in `state`), "conformal" when there are corrections, then `state`."""
        payload = {"config": self.config.to_dict(), "scaler": self.scaler.to_dict(),
                   "columns": self.columns.to_dict(), "freq": self.freq,
                   "series_ids": list(self.series_ids), "last_timestamps": list(self.last_timestamps),
                   "versions": self.versions, "data_fingerprint": self.data_fingerprint,
                   "features": self.features.to_dict(), "seen": self.seen}
        if self.seen is None:
            del payload["seen"]
        if models is not None:
            payload["models"] = models
        if self.conformal is not None:
            payload["conformal"] = self.conformal
        return {**payload, **state}

    @classmethod
    def from_checkpoint(cls, payload: dict) -> tuple[RunMeta, list[dict]]:
        """The run and its members' weights from a checkpoint of any readable format, migrated
        (the module docstring lists each migration). Raises LstmcastError for an unknown format,
        KeyError / TypeError / ValueError for a payload that lacks or garbles a required entry."""
        meta = cls.read(payload)
        return meta, upgrade_payload(payload)["models"]

    @classmethod
    def read(cls, payload: dict) -> RunMeta:
        """The run a checkpoint records, without its weights: model.pt, or last.pt (which holds
        none: --resume compares its config and data fingerprint). Migrated and checked as
        from_checkpoint."""
        check_format(payload.get("format_version"))
        payload = upgrade_payload(payload)
        config = config_from_saved(payload["config"])
        seen = payload.get("seen")
        series_ids = list(payload["series_ids"] if seen is not None else payload.get("series_ids", []))
        saved = payload.get("features") or {**_NO_FEATURES, "calendar": config.data.calendar}
        features = FeatureSpec.from_dict(saved, payload["freq"], series_ids)
        last = payload["last_timestamps"] if seen is not None else payload.get("last_timestamps", [])
        return cls(config, Scaler.from_dict(payload["scaler"]), Columns.from_dict(payload["columns"]),
                   payload["freq"], series_ids, last, payload.get("versions", {}),
                   payload.get("data_fingerprint"), features, seen, payload.get("conformal"),
                   payload["format_version"])

    @property
    def in_sample_record(self) -> dict | None:
        """What evaluate labels in-sample by: "seen" with its series_ids and last_timestamps;
        None when the run does not record it (format < 4)."""
        if self.seen is None:
            return None
        return {"series_ids": self.series_ids, "last_timestamps": self.last_timestamps, **self.seen}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunMeta):
            return NotImplemented
        return (self.format_version == other.format_version
                and _same(self.to_checkpoint(None), other.to_checkpoint(None)))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b or (a != a and b != b)   # NaN equals NaN here


__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "RunMeta", "check_format", "config_from_saved",
           "migrate_config", "upgrade_payload"]
