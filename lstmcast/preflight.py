"""Before a run writes anything: what the data and config must satisfy, and what is resolved.

Everything the user can get wrong is checked here first (lengths against the horizon, lookbacks
against the longest series, memory against the machine, a --resume against the interrupted run's
config and data), so a failed train leaves nothing half-made. resolve_config writes down what was
detected (columns, lookback, frequency) so that the saved config is fully explicit.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from . import timegrid
from .checkpoint import LAST, load_checkpoint
from .config import RESUMABLE_KEYS, Config
from .data import SeriesSet
from .errors import LstmcastError
from .run import RunMeta
from .validation import calibrated, minimum_length, too_short, validated
from .windows import N_FEATURES, available_memory, buffer_bytes, window_batch_bytes


def resolve_config(config: Config, series: SeriesSet) -> Config:
    """Record what was detected (columns, lookback, frequency, day/month order) so the saved
    config is fully explicit and predict reads new data the same way."""
    cols = series.columns
    data = dataclasses.replace(config.data, id_col=cols.id_col if cols.id_in_input else None,
                               time_col=cols.time_col, target=list(cols.targets),
                               lookback=config.data.resolved_lookback, freq=series.freq,
                               dayfirst=config.data.dayfirst if series.dayfirst is None else series.dayfirst)
    return dataclasses.replace(config, data=data)


def check_lengths(series: SeriesSet, horizon: int, path: Path, conformal: bool = False) -> None:
    need = minimum_length(horizon)
    short = too_short(series, horizon)
    if short:
        sid, n = short[0]
        more = f" (and {len(short) - 1} more)" if len(short) > 1 else ""
        raise LstmcastError(f"{path}: series '{sid}' has {n} points{more}; training needs at least "
                            f"{need} (horizon + 1, horizon {horizon}); lower --horizon or give "
                            f"it more history")
    if not validated(series.lengths(), horizon).any():
        raise LstmcastError(f"{path}: no series has the {2 * horizon + 1} points (2 x horizon + 1) "
                            f"needed to hold out a validation part; lower --horizon")
    if conformal and not calibrated(series.lengths(), horizon).any():
        raise LstmcastError(f"{path}: model.conformal needs a series of {3 * horizon + 1} points "
                            f"(3 x horizon + 1): its last horizon calibrates the intervals, the horizon "
                            f"before chooses the best epoch; lower --horizon, give more history or set "
                            f"model.conformal=false")


def check_lookbacks(series: SeriesSet, config: Config, path: Path) -> None:
    """Lookbacks the user gave (data.lookback, train.ensemble_lookbacks, train.members) longer than
    every series: the steps past the longest series are padding in every window, for nothing but
    time, which is most likely a typo. The default, 3 x horizon, may exceed short series (padded)."""
    given = [config.member(k).data.lookback for k in range(1, config.train.ensemble + 1)]
    given = [lookback for lookback in given if lookback is not None]
    lengths = series.lengths()
    longest = int(lengths.max())
    if given and max(given) > longest:
        sid = series.ids[int(lengths.argmax())]
        where = ("--lookback" if config.data.lookback == max(given)
                 else "the lookbacks in train.ensemble_lookbacks / train.members")
        raise LstmcastError(f"{path}: lookback {max(given)} is longer than the longest series ('{sid}', "
                            f"{longest} points): every window would start with at least "
                            f"{max(given) - longest} steps of padding; lower {where} to at most {longest}")


def check_memory(series: SeriesSet, config: Config) -> None:
    """Refuse, before allocating, a lookback (or horizon) whose series buffer and one batch of
    windows alone would not fit in this machine's available memory: a typo such as
    --lookback 200000000 would otherwise fail slowly or take the machine down."""
    available = available_memory()
    if available is None:
        return
    lookback, horizon = resolve_config(config, series).input_length, config.data.horizon
    width = N_FEATURES + len(config.data.covariates)  # calendar columns only add to this
    batch = max(config.member(k).train.batch_size for k in range(1, config.train.ensemble + 1))
    need = buffer_bytes(series.lengths(), lookback, width) + window_batch_bytes(batch, lookback, horizon, width)
    if need > available:
        gib = 1024 ** 3
        default = all(config.member(k).data.lookback is None for k in range(1, config.train.ensemble + 1))
        what = f"lookback {lookback} (3 x horizon {horizon})" if default else f"lookback {lookback}"
        raise LstmcastError(f"{what} needs ~{need / gib:.3g} GiB for the series buffer and one batch of "
                            f"windows, more than this machine's {available / gib:.3g} GiB of available "
                            f"memory; lower {'--horizon' if default else '--lookback'}")


def data_fingerprint(series: SeriesSet) -> str:
    digest = hashlib.sha256()
    digest.update(series.freq.encode())
    for sid, start, values in zip(series.ids, timegrid.isoformats(series.starts), series.values):
        digest.update(f"{sid}|{start}|{len(values)}".encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    if series.covariates is not None:  # without covariates: the same fingerprint as before them
        digest.update("|".join(series.covariate_names).encode())
        for covariates in series.covariates:
            digest.update(np.ascontiguousarray(covariates).tobytes())
    return digest.hexdigest()


def config_differences(a: Config, b: Config) -> list[tuple[str, object, object]]:
    """(key, value in a, value in b) of each key whose values differ, in declaration order."""
    flat_a = {f"{s}.{k}": v for s, sec in a.to_dict().items() for k, v in sec.items()}
    flat_b = {f"{s}.{k}": v for s, sec in b.to_dict().items() for k, v in sec.items()}
    return [(k, flat_a[k], flat_b[k]) for k in flat_a if flat_a[k] != flat_b[k]]


def check_resume(out: Path, config: Config, fingerprint: str, data_path: Path) -> dict:
    """The interrupted run's last.pt, if it may be continued with this config and data: only the
    RESUMABLE_KEYS may differ, and the data must be the same (its fingerprint)."""
    state = load_checkpoint(out / LAST)
    saved = RunMeta.read(state)
    changed = [d for d in config_differences(saved.config, config) if d[0] not in RESUMABLE_KEYS]
    if changed:
        key, was, now = changed[0]
        raise LstmcastError(f"--resume: '{key}' was {was!r} in {out}, now {now!r}; only "
                            f"{', '.join(sorted(RESUMABLE_KEYS))} may change when resuming")
    if saved.data_fingerprint != fingerprint:
        raise LstmcastError(f"--resume: {data_path} differs from the data {out} was trained on; "
                            f"start a new run (--overwrite or another --out)")
    return state
