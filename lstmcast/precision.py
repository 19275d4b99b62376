"""Numeric precision: bf16 autocast where it is really fast and really bf16, and the TF32 policy.

train.precision:
  auto  bf16 autocast on CUDA where it is faster and every cell in use runs its bf16 fast path
        there (probed below); IEEE fp32 otherwise, and always on a CPU or MPS. Faster, as measured
        (benchmarks/bf16_crossover.py on an H200, torch 2.11, cuDNN 9.19): cuDNN's bf16 RNN has
        no persistent kernel, so each step costs about the same whatever the size, while fp32
        small models run in cuDNN's persistent kernel: bf16 was 3-6x SLOWER for hidden sizes up
        to 128, and 1.1-3.6x faster only from hidden 192 at batch 1024 (lstm, gru). The custom
        cells' Triton loops run at the same speed in both. So auto means bf16 only for lstm / gru
        members with hidden_size >= 192 and batch_size >= 1024 (bf16_pays). Choosing fp32 on CUDA
        because the probe failed is a recorded fallback (stderr once, metrics.json "fallbacks").
  bf16  bf16 autocast; on CUDA an error (exit 2) if a cell in use has no bf16 fast path there.
  fp32  IEEE fp32 everywhere: TF32 is turned OFF for matmuls and cuDNN (torch leaves cuDNN on
        TF32 by default, so on Ampere/Hopper an "fp32" LSTM would otherwise multiply with 10-bit
        mantissas).
  tf32  fp32 tensors, TF32 tensor-core math for matmuls and cuDNN (CUDA; the same as fp32 elsewhere).

Forecasting on a CPU is always fp32, whatever the run was trained in.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterable, Iterator

import torch

from . import cells
from .device import fallbacks, record_fallback
from .errors import LstmcastError
from .keys import PRECISIONS  # train.precision's values, declared with the key

# ----------------------------------------------------------------------------------------------
# The bf16 probe: what really runs a cell under bf16 autocast on this device


def _op_names(step) -> set[str]:
    """The names of the ops `step()` ran. torch 2.11's profiler warns "Profiler clears events at
    the end of each cycle" on a second profile in a process (seen on the H200, where it reached
    users as an lstmcast warning asking them to report it): about the profiler, not their run."""
    from torch.profiler import ProfilerActivity, profile
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Profiler clears events")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        return {event.key for event in prof.key_averages()}


@functools.cache
def bf16_kernel(cell: str, device: torch.device) -> tuple[bool, str]:
    """(ok, what runs) for one forward + backward of `cell` under bf16 autocast on `device`.

    lstm / gru: ok only if cuDNN's fused RNN (aten::_cudnn_rnn) ran AND its output is bf16. Not
    raising is not enough: where cuDNN has no bf16 RNN, torch runs a slow per-step path instead,
    or autocast leaves the RNN in fp32. peephole / cifg / grid (its time loop): ok if the Triton
    kernel ran (no fallback recorded) with bf16 matmuls.
    """
    cells.check_cell(cell)
    torch.manual_seed(0)
    encoder = cells.make_encoder(cell, 2, 8, layers=1).to(device)
    inputs = torch.randn(4, 5, 2, device=device)
    seen: dict = {}

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out, _ = encoder(inputs)
        out.float().sum().backward()
        seen["dtype"] = out.dtype

    before = set(fallbacks())
    with cells.graphs.off():   # the kernels themselves, not a recording of them
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the reason is reported, never swallowed
            return False, f"fails under bf16 autocast ({type(exc).__name__}: {str(exc).strip()[:200]})"
        try:
            names = _op_names(step)
        except Exception as exc:  # noqa: BLE001
            return False, f"cannot tell which kernel runs: the profiler failed ({type(exc).__name__}: {exc})"
    dtype = str(seen["dtype"]).replace("torch.", "")
    if cell in ("lstm", "gru"):
        if not any("_cudnn_rnn" in name for name in names):
            return False, f"no cuDNN RNN under bf16 (torch's per-step path, output {dtype})"
        if seen["dtype"] != torch.bfloat16:
            return False, f"cuDNN RNN runs in {dtype} under bf16 autocast, not bf16"
        return True, "cuDNN bf16"
    new = set(fallbacks()) - before
    if new:
        return False, "; ".join(f"{path}: {fallbacks()[path]}" for path in sorted(new))
    if seen["dtype"] != torch.bfloat16:
        return False, f"output is {dtype} under bf16 autocast"
    return True, "Triton bf16" if cells.use_triton(inputs) else "TorchScript bf16"


# Where bf16 pays on CUDA (see the module docstring): cuDNN's lstm / gru from these sizes on.
BF16_MIN_HIDDEN, BF16_MIN_BATCH = 192, 1024


def bf16_pays(cell: str, hidden_size: int, batch_size: int) -> bool:
    """Whether a member of this cell and size trains faster in bf16 than in fp32 on a GPU."""
    return cell in ("lstm", "gru") and hidden_size >= BF16_MIN_HIDDEN and batch_size >= BF16_MIN_BATCH


def autocast_dtype(precision: str, device: torch.device, cells_in_use: Iterable[str] = ("lstm",),
                   shapes: Iterable[tuple[str, int, int]] | None = None) -> torch.dtype | None:
    """The autocast dtype for training / forecasting on `device`, or None for plain fp32.

    `shapes`: (cell, hidden_size, batch_size) of every member; with precision auto, bf16 only if
    it pays for all of them (None: decided by the probe alone)."""
    if precision not in PRECISIONS:
        raise LstmcastError(f"train.precision={precision}: choose one of {', '.join(PRECISIONS)}")
    if precision in ("fp32", "tf32") or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto" and shapes is not None and not all(bf16_pays(*shape) for shape in shapes):
        return None
    if device.type != "cuda":
        return torch.bfloat16           # an explicit bf16 on a CPU: the user's choice
    failed = {cell: why for cell in sorted(set(cells_in_use))
              for ok, why in [bf16_kernel(cell, device)] if not ok}
    if not failed:
        return torch.bfloat16
    reason = "; ".join(f"cell {cell}: {why}" for cell, why in failed.items())
    if precision == "bf16":
        raise LstmcastError(f"train.precision=bf16: no fast bf16 path on this GPU ({reason}); "
                            f"use train.precision=auto or fp32")
    record_fallback("bf16", f"{reason}; training in fp32")
    return None


def forecast_autocast(precision: str, device: torch.device, cells_in_use: Iterable[str],
                      shapes: Iterable[tuple[str, int, int]] | None = None) -> torch.dtype | None:
    """Forecasting: a run's own precision on CUDA; on a CPU always fp32 (a bf16 run too)."""
    if device.type != "cuda":
        return None
    return autocast_dtype(precision, device, cells_in_use, shapes)


def name(autocast: torch.dtype | None, precision: str, device: torch.device) -> str:
    """What the arithmetic really is: bf16, tf32 or fp32."""
    if autocast is not None:
        return "bf16"
    return "tf32" if precision == "tf32" and device.type == "cuda" else "fp32"


# ----------------------------------------------------------------------------------------------
# TF32


@contextlib.contextmanager
def fp32_math(precision: str) -> Iterator[None]:
    """Inside: fp32 matmuls and cuDNN (convolutions, RNNs) are IEEE fp32, or TF32 for
    precision 'tf32'. torch's global flags are restored on the way out."""
    mode = "tf32" if precision == "tf32" else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):      # torch >= 2.9
        flags = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
        saved = [flag.fp32_precision for flag in flags]
        try:
            for flag in flags:
                flag.fp32_precision = mode
            yield
        finally:
            for flag, value in zip(flags, saved):
                flag.fp32_precision = value
    else:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        try:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def tf32_state() -> dict[str, bool]:
    """Whether TF32 is on now for fp32 matmuls and for cuDNN RNNs ("none" inherits the parent)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        def resolved(*levels) -> bool:
            for value in levels:
                if value != "none":
                    return value == "tf32"
            return False
        backends = torch.backends
        return {"matmul": resolved(backends.cuda.matmul.fp32_precision, backends.fp32_precision),
                "cudnn_rnn": resolved(backends.cudnn.rnn.fp32_precision, backends.cudnn.fp32_precision,
                                      backends.fp32_precision)}
    return {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn_rnn": torch.backends.cudnn.allow_tf32}
