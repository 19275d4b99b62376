"""Device choice (checked by allocating), numeric precision and seeding."""

from __future__ import annotations

import functools
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


@functools.cache
def _bf16_lstm_works(device: torch.device) -> bool:
    """cuDNN runs LSTMs in bf16 only from cuDNN 9.13 on: try one tiny step rather than guess."""
    try:
        lstm = torch.nn.LSTM(2, 4, batch_first=True).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out, _ = lstm(torch.randn(2, 3, 2, device=device))
        out.float().sum().backward()
        return True
    except RuntimeError:
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training/inference, or None for plain fp32.

    'auto' means bf16 on CUDA (tensor cores, no loss scaling needed) where this torch/cuDNN can
    run an LSTM in bf16, and fp32 elsewhere.
    """
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda" and not _bf16_lstm_works(device):
        if precision == "auto":
            return None
        raise LstmcastError("train.precision=bf16: this torch/cuDNN cannot run an LSTM in bf16 on "
                            "this GPU; use train.precision=auto or fp32")
    return torch.bfloat16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
