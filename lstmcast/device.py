"""Device choice (checked by allocating), numeric precision and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import LstmcastError


def _usable(device: str) -> bool:
    """A backend counts as available only if a tensor can really be put on it."""
    try:
        if device == "cuda" and not torch.cuda.is_available():
            return False
        if device == "mps" and not (getattr(torch.backends, "mps", None)
                                    and torch.backends.mps.is_available()):
            return False
        torch.zeros(1, device=device).add_(1)
        return True
    except Exception:  # a broken driver is "not usable", never a crash
        return False


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit device must work or it is an error."""
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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training/inference, or None for plain fp32.

    'auto' means bf16 on CUDA (tensor cores, no loss scaling needed) and fp32 elsewhere.
    """
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
