"""Device choice (checked by allocating), seeding, and the record of fast paths that fell back.

Precision (bf16 autocast, TF32) lives in precision.py: deciding it needs the cells.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import torch

from .errors import LstmcastError
from .keys import DEVICES, is_choice


def _usable(device: str) -> bool:
    """A backend counts as available only if a tensor can really be put on it."""
    try:
        if device.startswith("cuda") and not torch.cuda.is_available():
            return False
        if device == "mps" and not (getattr(torch.backends, "mps", None)
                                    and torch.backends.mps.is_available()):
            return False
        torch.zeros(1, device=device).add_(1)
        return True
    except Exception:  # a broken driver is "not usable", never a crash
        return False


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit device (config.DEVICES: cpu, cuda, cuda:N,
    mps) must work or it is an error."""
    if not is_choice(name, DEVICES):
        raise LstmcastError(f"--device {name}: not a device lstmcast runs on; use {'|'.join(DEVICES)}")
    if name == "auto":
        for candidate in ("cuda", "mps"):
            if _usable(candidate):
                return torch.device(candidate)
        return torch.device("cpu")
    if name != "cpu" and not _usable(name):
        raise LstmcastError(f"--device {name}: no usable {name} device here; use --device auto or cpu")
    return torch.device(name)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Fallbacks: a fast path (Triton kernel, TorchScript loop, bf16) that could not run and what ran
# instead. Never silent: each is said once per process on stderr, with its reason, and training
# records them all in metrics.json ("fallbacks"). Tests of a fast path assert none was recorded.

_FALLBACKS: dict[str, str] = {}


def record_fallback(path: str, reason: str) -> None:
    """`path` (e.g. "triton") could not run because of `reason`; say so once on stderr."""
    if path in _FALLBACKS:
        return
    _FALLBACKS[path] = reason
    print(f"lstmcast: warning: {path} fast path not used: {reason}", file=sys.stderr, flush=True)


def fallbacks() -> dict[str, str]:
    """Every fallback of this process so far: {path: reason}."""
    return dict(_FALLBACKS)


def clear_fallbacks() -> None:
    _FALLBACKS.clear()
