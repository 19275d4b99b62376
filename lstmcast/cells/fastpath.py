"""The fast path of one layer and direction, and the switches that choose how it runs.

TorchScript on CPU, the Triton kernels on CUDA (each layer's time loop replayed as a CUDA graph:
graphs.py); a failure of any of them is a recorded fallback.
The package forwards this module's switches and hooks (`cells.USE_TRITON`, `cells.USE_SCRIPT`,
`cells._COMPILED`, `cells.triton`, `cells.use_triton`, `cells.triton_layer_forward`, ...):
setting or monkeypatching them sets the name HERE, where the functions below read it at call
time (see cells/__init__.py).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..device import record_fallback
from . import graphs
from .equations import LayerWeights
from .pointwise import gru_pointwise, lstm_layer_backward, lstm_layer_forward, peephole_grad
from .triton_kernel import triton, triton_layer_backward, triton_layer_forward

USE_TRITON = True   # False: CUDA runs the scripted loops too
USE_SCRIPT = True   # False: the loops run as plain Python (benchmarks/cells.py --no-script compares)
_COMPILED: dict = {}


def compiled(fn):
    """torch.jit.script(fn), compiled once per process; fn itself where scripting is off.

    TorchScript is deprecated in recent torch (hence the silenced warning), but it is what runs a
    time loop of small ops without a Python round trip per op, forward and backward alike. If
    scripting fails, eager Python runs the same arithmetic (slower): a recorded fallback.
    """
    if not USE_SCRIPT:
        return fn
    if fn not in _COMPILED:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _COMPILED[fn] = torch.jit.script(fn)
        except Exception as exc:  # noqa: BLE001 - said and recorded, never silent
            record_fallback("torchscript", f"scripting {fn.__name__} failed ({type(exc).__name__}: "
                                           f"{_first_line(exc)}); its loop runs as plain Python")
            _COMPILED[fn] = fn
    return _COMPILED[fn]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def use_triton(tensor: Tensor) -> bool:
    return USE_TRITON and triton is not None and tensor.is_cuda


def layer_forward(projected: Tensor, h: Tensor, c: Tensor, weight_hh_t: Tensor, peephole: Tensor | None,
                  coupled: bool) -> tuple[Tensor, Tensor, Tensor]:
    """lstm_layer_forward, on CUDA with the Triton kernel. Where that cannot run (no triton, a
    kernel that fails to compile on an old GPU or a triton/torch mismatch) the scripted loop
    computes the same numbers: a fallback said once on stderr and recorded (device.fallbacks),
    and from then on this process uses the scripted loop."""
    global USE_TRITON
    if projected.is_cuda and USE_TRITON and triton is None:
        record_fallback("triton", "triton is not installed; the LSTM cells' time loop runs as TorchScript")
    if use_triton(projected):
        try:
            return graphs.run(triton_layer_forward, "forward", (projected, h, c, weight_hh_t, peephole), (coupled,))
        except Exception as exc:  # noqa: BLE001 - said and recorded, never silent
            record_fallback("triton", f"the Triton LSTM kernel failed ({type(exc).__name__}: "
                                      f"{_first_line(exc)}); using the TorchScript loop")
            USE_TRITON = False
    return compiled(lstm_layer_forward)(projected, h, c, weight_hh_t, peephole, coupled)


def layer_backward(grad_hs: Tensor, grad_c_last: Tensor, acts: Tensor, cs: Tensor, weight_hh: Tensor,
                   peephole: Tensor | None, coupled: bool) -> tuple[Tensor, Tensor, Tensor]:
    """lstm_layer_backward, on CUDA with the Triton backward kernel; a failure there falls back to
    the scripted loop as layer_forward's does (said once, recorded, for the rest of the process)."""
    global USE_TRITON
    if use_triton(acts):
        try:
            return graphs.run(triton_layer_backward, "backward", (grad_hs, grad_c_last, acts, cs, weight_hh, peephole),
                              (coupled,))
        except Exception as exc:  # noqa: BLE001 - said and recorded, never silent
            record_fallback("triton", f"the Triton LSTM backward kernel failed ({type(exc).__name__}: "
                                      f"{_first_line(exc)}); using the TorchScript loop")
            USE_TRITON = False
    return compiled(lstm_layer_backward)(grad_hs, grad_c_last, acts, cs, weight_hh, peephole, coupled)


class LstmLayer(torch.autograd.Function):
    """One LSTM-family layer and direction over the whole sequence, as one autograd node.

    Forward: the time loop (scripted on CPU, Triton element-wise kernel on CUDA). Backward: the
    time loop in reverse with the hand-written element-wise gradients (scripted on CPU, a Triton
    kernel on CUDA); the gradient of W_hh is then
    ONE (G*H, seq * batch) x (seq * batch, H) matmul instead of one per step. Autograd through
    the loop would record ~20 nodes per step and run them one by one.
    Inputs: projected (seq, batch, G*H), h0, c0 (batch, H), weight_hh (G*H, H), peephole (3H,)
    or None. Outputs: hs (seq, batch, H) in projected's dtype (the matmul dtype under autocast),
    c_T (batch, H). The cell state stays in c0's dtype.
    """

    @staticmethod
    def forward(ctx, projected, h0, c0, weight_hh, peephole, coupled):
        dtype = projected.dtype
        weight = weight_hh.to(dtype)
        with torch.autocast(projected.device.type, enabled=False):  # dtypes are explicit here
            hs, cs, acts = layer_forward(projected, h0.to(dtype), c0, weight.t(), peephole, coupled)
        ctx.coupled = coupled
        ctx.dtypes = (projected.dtype, h0.dtype, c0.dtype, weight_hh.dtype)
        ctx.save_for_backward(acts, cs, hs, h0, weight, peephole)
        return hs, cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs, grad_c_last):
        acts, cs, hs, h0, weight, peephole = ctx.saved_tensors
        grad_gates, grad_h0, grad_c0 = layer_backward(
            grad_hs.contiguous(), grad_c_last.contiguous(), acts, cs, weight, peephole, ctx.coupled)
        h_prev = torch.cat([h0.to(hs.dtype).unsqueeze(0), hs[:-1]])       # (seq, batch, H)
        grad_weight_hh = grad_gates.flatten(0, 1).t().mm(h_prev.flatten(0, 1).to(grad_gates.dtype))
        grad_peephole = peephole_grad(grad_gates, cs).to(peephole.dtype) if peephole is not None else None
        projected_dtype, h0_dtype, c0_dtype, weight_dtype = ctx.dtypes
        return (grad_gates.to(projected_dtype), grad_h0.to(h0_dtype), grad_c0.to(c0_dtype),
                grad_weight_hh.to(weight_dtype), grad_peephole, None)


def run_fast(cell: str, inputs: Tensor, state: tuple[Tensor, ...], w: LayerWeights
             ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """inputs (batch, seq, in) -> (batch, seq, H), final state; the same numbers as run_reference.

    x W_ih^T for all steps is ONE (seq * batch, in) x (in, G*H) matmul before the loop; the loop
    does only h W_hh^T and the fused element-wise update.
    """
    if cell == "gru":
        return _run_fast_gru(inputs, state, w)
    h, c = state
    projected = F.linear(inputs.transpose(0, 1), w.weight_ih, w.bias_ih + w.bias_hh)  # (seq, batch, G*H)
    hs, c = LstmLayer.apply(projected, h, c, w.weight_hh, w.peephole, cell == "cifg")
    return hs.transpose(0, 1), (hs[-1], c)


def _run_fast_gru(inputs: Tensor, state: tuple[Tensor], w: LayerWeights) -> tuple[Tensor, tuple[Tensor]]:
    """Autograd through the loop: make_encoder runs nn.GRU; this path is for the mapping tests.
    The hidden projection keeps b_hh apart because r multiplies its n block."""
    (h,) = state
    projected = F.linear(inputs.transpose(0, 1), w.weight_ih, w.bias_ih)  # (seq, batch, 3H)
    weight_hh_t = w.weight_hh.t()                                        # (H, 3H)
    update = compiled(gru_pointwise)
    outputs = []
    for x_gates in projected.unbind(0):
        h = update(x_gates, torch.addmm(w.bias_hh, h, weight_hh_t), h)
        outputs.append(h)
    return torch.stack(outputs, dim=1), (h,)
