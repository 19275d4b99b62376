"""Where and in what arithmetic a run computes: one `Runtime`, passed to whatever runs the model
(training epochs, validation, calibration) instead of a device and an autocast dtype apart."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .device import fallbacks, resolve_device
from .distributed import Ranks
from .precision import autocast_dtype, bf16_kernel, forecast_autocast, tf32_state
from .precision import name as precision_name


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast: torch.dtype | None = None  # bf16 autocast, or None: plain fp32 (or TF32)
    precision: str = "fp32"              # train.precision as configured: auto, fp32, tf32, bf16
    ranks: Ranks = field(default_factory=Ranks)  # the distributed launch (one process: rank 0 of 1)

    @classmethod
    def resolve(cls, device: str, precision: str, cells_in_use: tuple[str, ...],
                ranks: Ranks | None = None, shapes: tuple[tuple[str, int, int], ...] | None = None) -> Runtime:
        """train.device and train.precision, resolved here (auto: bf16 where it pays for the members'
        `shapes`, precision.bf16_pays; bf16 is probed per cell on CUDA); under torchrun each rank's
        CUDA device is cuda:LOCAL_RANK."""
        ranks = ranks or Ranks()
        resolved = ranks.device(resolve_device(device), device)
        return cls(resolved, autocast_dtype(precision, resolved, cells_in_use, shapes), precision, ranks)

    @classmethod
    def for_forecast(cls, device: torch.device, precision: str, cells_in_use: tuple[str, ...],
                     shapes: tuple[tuple[str, int, int], ...] | None = None) -> Runtime:
        """Forecasting with a run trained in `precision`: its own precision on CUDA, always fp32
        on a CPU (a bf16 run too)."""
        return cls(device, forecast_autocast(precision, device, cells_in_use, shapes), precision)

    @property
    def name(self) -> str:
        """What the arithmetic really is: bf16, tf32 or fp32."""
        return precision_name(self.autocast, self.precision, self.device)

    def autocast_context(self) -> torch.autocast:
        """The model's forward pass runs inside this (disabled without bf16)."""
        return torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                              enabled=self.autocast is not None)

    def arithmetic(self, cells_in_use: tuple[str, ...]) -> dict:
        """metrics.json's record of what the numbers were computed with: precision, kernels, TF32,
        fallbacks."""
        out = {"precision": self.name}
        if self.device.type == "cuda":
            out["tf32"] = tf32_state()
            if self.autocast is not None:
                out["kernels"] = {cell: bf16_kernel(cell, self.device)[1] for cell in cells_in_use}
        out["fallbacks"] = fallbacks()
        return out


def autocast_of(runtime: Runtime | None) -> torch.dtype | None:
    """The autocast dtype of `runtime`; None (plain fp32) without one."""
    return None if runtime is None else runtime.autocast
