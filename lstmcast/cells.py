"""Recurrent cells written from their equations: the LSTM and its variants, and the GRU.

For input x_t and the previous state (h_{t-1}, c_{t-1}), the LSTM (Hochreiter & Schmidhuber 1997)
with the forget gate of Gers et al. (2000) computes

    f_t = sigmoid(W_f x_t + U_f h_{t-1} + b_f)      i_t = sigmoid(W_i x_t + U_i h_{t-1} + b_i)
    g_t = tanh(W_c x_t + U_c h_{t-1} + b_c)         c_t = f_t * c_{t-1} + i_t * g_t
    o_t = sigmoid(W_o x_t + U_o h_{t-1} + b_o)      h_t = o_t * tanh(c_t)

Cells (the `cell` name):
  lstm      the equations above; what torch.nn.LSTM computes.
  peephole  Gers & Schmidhuber (2000): i and f also see c_{t-1}, o sees c_t, through diagonal
            weight vectors p_i, p_f, p_o of size H (3H more parameters per layer and direction).
  cifg      coupled input-forget gate: i_t = 1 - f_t. Three gate blocks instead of four.
  gru       Cho et al. (2014), as torch.nn.GRU computes it (gates r, z, n).

The parameter layout is torch's, so that weights move between this module and nn.LSTM / nn.GRU
by name: weight_ih_l{k} (G*H, in), weight_hh_l{k} (G*H, H), bias_ih_l{k} and bias_hh_l{k} (G*H,),
suffix `_reverse` for the backward direction, G gate blocks stacked in the order
  lstm, peephole: i, f, g, o     cifg: f, g, o     gru: r, z, n
and for peephole one more vector peephole_l{k} (3H,) holding p_i, p_f, p_o.

Two ways to run the same parameters:
  reference  one time step at a time, every gate written out as in the equations (`*_step`).
             Slow; it is the definition the tests hold everything else to.
  fast       the input projections of all time steps in ONE matmul before the loop; per step one
             addmm (h @ U) and a fused element-wise update (TorchScript on CPU, a Triton kernel
             on CUDA); a layer is one autograd node (LstmLayer) whose
             backward runs the time loop in reverse with hand-written gradients. What
             RecurrentEncoder.forward runs; the GRU runs autograd through its loop instead.
For cell 'lstm' and 'gru' the model should simply use torch's own modules (cuDNN on CUDA):
`make_encoder` returns nn.LSTM / nn.GRU for those and a RecurrentEncoder for the others.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .config import CELLS  # model.cell's values, declared with the key
from .device import record_fallback

GATE_BLOCKS = {"lstm": 4, "peephole": 4, "cifg": 3, "gru": 3}
LSTM_FAMILY = ("lstm", "peephole", "cifg")


def check_cell(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {', '.join(CELLS)}")
    return cell


# ----------------------------------------------------------------------------------------------
# Parameters of one layer and direction


class LayerWeights(NamedTuple):
    """One layer and direction's parameters, in torch's layout (see the module docstring)."""
    weight_ih: Tensor                 # (G*H, in)
    weight_hh: Tensor                 # (G*H, H)
    bias_ih: Tensor                   # (G*H,)
    bias_hh: Tensor                   # (G*H,)
    peephole: Tensor | None = None  # (3H,) p_i, p_f, p_o; peephole cell only


def parameter_count(cell: str, input_size: int, hidden_size: int, layers: int = 1,
                    bidirectional: bool = False) -> int:
    """Exact number of parameters of an encoder, from the formulas (tests check them against
    the modules): per layer and direction, with n = that layer's input size,

        lstm      4H(n + H + 2)          (= torch.nn.LSTM)
        peephole  4H(n + H + 2) + 3H     (3 peephole vectors)
        cifg      3H(n + H + 2)          (H(n + H + 2) fewer than lstm: no input-gate block)
        gru       3H(n + H + 2)          (= torch.nn.GRU)

    n is input_size in layer 0 and H * directions above it. The two biases per gate block are
    kept (as torch does) so that weights map to and from torch one to one.
    """
    directions = 2 if bidirectional else 1
    hidden = hidden_size
    total = 0
    for layer in range(layers):
        n = input_size if layer == 0 else hidden * directions
        per_direction = GATE_BLOCKS[check_cell(cell)] * hidden * (n + hidden + 2)
        if cell == "peephole":
            per_direction += 3 * hidden
        total += directions * per_direction
    return total


def encoder_output_size(hidden_size: int, bidirectional: bool) -> int:
    """Features per time step of an encoder's output: both directions are concatenated."""
    return hidden_size * (2 if bidirectional else 1)


# ----------------------------------------------------------------------------------------------
# Reference steps: one time step, the equations written out gate by gate.
# x: (batch, in); h, c: (batch, H). States are tuples: (h, c) for the LSTM family, (h,) for gru.


def _blocks(w: LayerWeights, count: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Per-gate (W, U, b) blocks; b is b_ih + b_hh, the one bias of the equations."""
    return (w.weight_ih.chunk(count), w.weight_hh.chunk(count), (w.bias_ih + w.bias_hh).chunk(count))


def lstm_step(x: Tensor, state: tuple[Tensor, Tensor], w: LayerWeights) -> tuple[Tensor, Tensor]:
    h, c = state
    (W_i, W_f, W_c, W_o), (U_i, U_f, U_c, U_o), (b_i, b_f, b_c, b_o) = _blocks(w, 4)
    f = torch.sigmoid(x @ W_f.T + h @ U_f.T + b_f)
    i = torch.sigmoid(x @ W_i.T + h @ U_i.T + b_i)
    g = torch.tanh(x @ W_c.T + h @ U_c.T + b_c)
    c = f * c + i * g
    o = torch.sigmoid(x @ W_o.T + h @ U_o.T + b_o)
    h = o * torch.tanh(c)
    return h, c


def peephole_step(x: Tensor, state: tuple[Tensor, Tensor], w: LayerWeights) -> tuple[Tensor, Tensor]:
    """Gers & Schmidhuber (2000): the gates look at the cell; o at the new one."""
    h, c_prev = state
    (W_i, W_f, W_c, W_o), (U_i, U_f, U_c, U_o), (b_i, b_f, b_c, b_o) = _blocks(w, 4)
    p_i, p_f, p_o = w.peephole.chunk(3)
    f = torch.sigmoid(x @ W_f.T + h @ U_f.T + p_f * c_prev + b_f)
    i = torch.sigmoid(x @ W_i.T + h @ U_i.T + p_i * c_prev + b_i)
    g = torch.tanh(x @ W_c.T + h @ U_c.T + b_c)
    c = f * c_prev + i * g
    o = torch.sigmoid(x @ W_o.T + h @ U_o.T + p_o * c + b_o)
    h = o * torch.tanh(c)
    return h, c


def cifg_step(x: Tensor, state: tuple[Tensor, Tensor], w: LayerWeights) -> tuple[Tensor, Tensor]:
    """Coupled input-forget gate: what is forgotten is exactly what is written (i = 1 - f)."""
    h, c = state
    (W_f, W_c, W_o), (U_f, U_c, U_o), (b_f, b_c, b_o) = _blocks(w, 3)
    f = torch.sigmoid(x @ W_f.T + h @ U_f.T + b_f)
    i = 1 - f
    g = torch.tanh(x @ W_c.T + h @ U_c.T + b_c)
    c = f * c + i * g
    o = torch.sigmoid(x @ W_o.T + h @ U_o.T + b_o)
    h = o * torch.tanh(c)
    return h, c


def gru_step(x: Tensor, state: tuple[Tensor], w: LayerWeights) -> tuple[Tensor]:
    """As torch.nn.GRU: the reset gate multiplies U_n h + b_hn, so the two biases stay apart."""
    (h,) = state
    W_r, W_z, W_n = w.weight_ih.chunk(3)
    U_r, U_z, U_n = w.weight_hh.chunk(3)
    b_ir, b_iz, b_in = w.bias_ih.chunk(3)
    b_hr, b_hz, b_hn = w.bias_hh.chunk(3)
    r = torch.sigmoid(x @ W_r.T + b_ir + h @ U_r.T + b_hr)
    z = torch.sigmoid(x @ W_z.T + b_iz + h @ U_z.T + b_hz)
    n = torch.tanh(x @ W_n.T + b_in + r * (h @ U_n.T + b_hn))
    h = (1 - z) * n + z * h
    return (h,)


REFERENCE_STEPS = {"lstm": lstm_step, "peephole": peephole_step, "cifg": cifg_step, "gru": gru_step}


def run_reference(cell: str, inputs: Tensor, state: tuple[Tensor, ...], w: LayerWeights
                  ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer, one direction, step by step. inputs (batch, seq, in) -> (batch, seq, H)."""
    step = REFERENCE_STEPS[cell]
    outputs = []
    for t in range(inputs.shape[1]):
        state = step(inputs[:, t], state, w)
        outputs.append(state[0])
    return torch.stack(outputs, dim=1), state


# ----------------------------------------------------------------------------------------------
# The fused element-wise update: everything in a step after the matmuls.
# gates: (batch, G*H) pre-activations, input and hidden projections and both biases summed, in the
# cell's gate order; for peephole without the peephole terms (they need c and are added here).


def lstm_pointwise(gates: Tensor, c: Tensor, peephole: Tensor | None, coupled: bool
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """(gates, c_{t-1}) -> (h_t, c_t, acts); acts (batch, G*H) are the activated gates in the
    layout of `gates`, kept for the hand-written backward. The pure-torch twin of the Triton
    kernel (same signature and arithmetic) and what the scripted CPU loop runs.

    Written for few ops (each op costs microseconds of dispatch at these sizes): without
    peepholes every block but g is a sigmoid, so one sigmoid covers them all and g is written
    over its block in place. That in-place write is why autograd cannot run through this
    function: it runs inside LstmLayer, whose backward is lstm_pointwise_backward.
    """
    hidden = c.shape[1]
    g_at = hidden if coupled else 2 * hidden                # g's block: (f, g, o) or (i, f, g, o)
    g = torch.tanh(gates[:, g_at: g_at + hidden])
    if peephole is None:
        acts = torch.sigmoid(gates)
        acts[:, g_at: g_at + hidden] = g
        if coupled:
            f, o = acts[:, :hidden], acts[:, 2 * hidden:]
            c_new = torch.addcmul(g, f, c - g)                # f c + (1 - f) g
        else:
            i, f, o = acts[:, :hidden], acts[:, hidden: 2 * hidden], acts[:, 3 * hidden:]
            c_new = torch.addcmul(f * c, i, g)                # f c + i g
    else:
        i = torch.sigmoid(torch.addcmul(gates[:, :hidden], peephole[:hidden], c))
        f = torch.sigmoid(torch.addcmul(gates[:, hidden: 2 * hidden], peephole[hidden: 2 * hidden], c))
        c_new = torch.addcmul(f * c, i, g)
        o = torch.sigmoid(torch.addcmul(gates[:, 3 * hidden:], peephole[2 * hidden:], c_new))
        acts = torch.cat([i, f, g, o], dim=1)
    h = o * torch.tanh(c_new)
    return h, c_new, acts


def lstm_pointwise_backward(acts: Tensor, c: Tensor, c_new: Tensor, peephole: Tensor | None, coupled: bool,
                            grad_h: Tensor, grad_c_new: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of lstm_pointwise by hand: (grad_gates (batch, G*H), grad_c (batch, H)).

    grad_gates = (gradient w.r.t. each activated gate) * (that activation's derivative), the
    derivative taken for all blocks at once from acts: s (1 - s) for the sigmoid gates, 1 - g^2
    for g. The peephole vectors' gradients are sums over steps of grad_gates times c; the layer
    computes them once after the time loop (peephole_grad).
    """
    hidden = c.shape[1]
    g_at = hidden if coupled else 2 * hidden
    g, o = acts[:, g_at: g_at + hidden], acts[:, -hidden:]
    tanh_c = torch.tanh(c_new)
    grad_o = grad_h * tanh_c                                              # h = o tanh(c_t)
    slope = acts - acts * acts                                            # (batch, G*H)
    slope[:, g_at: g_at + hidden] = 1.0 - g * g
    grad_c_total = torch.addcmul(grad_c_new, grad_h * o, 1.0 - tanh_c * tanh_c)
    if peephole is not None:                                              # o_t sees c_t
        grad_c_total = torch.addcmul(grad_c_total, grad_o * slope[:, -hidden:], peephole[2 * hidden:])
    if coupled:                                                           # c_t = f c + (1 - f) g
        f = acts[:, :hidden]
        grad_acts = torch.cat([grad_c_total * (c - g), grad_c_total * (1.0 - f), grad_o], dim=1)
    else:                                                                 # c_t = f c + i g
        i, f = acts[:, :hidden], acts[:, hidden: 2 * hidden]
        grad_acts = torch.cat([grad_c_total * g, grad_c_total * c, grad_c_total * i, grad_o], dim=1)
    grad_gates = grad_acts * slope
    grad_c = grad_c_total * f
    if peephole is not None:                                              # i_t, f_t see c_{t-1}
        grad_c = grad_c + grad_gates[:, :hidden] * peephole[:hidden] \
            + grad_gates[:, hidden: 2 * hidden] * peephole[hidden: 2 * hidden]
    return grad_gates, grad_c


def gru_pointwise(input_gates: Tensor, hidden_gates: Tensor, h: Tensor) -> Tensor:
    """input_gates = x W_ih^T + b_ih, hidden_gates = h W_hh^T + b_hh, both (batch, 3H) -> h_t."""
    hidden = h.shape[1]
    r = torch.sigmoid(input_gates[:, :hidden] + hidden_gates[:, :hidden])
    z = torch.sigmoid(input_gates[:, hidden: 2 * hidden] + hidden_gates[:, hidden: 2 * hidden])
    n = torch.tanh(input_gates[:, 2 * hidden:] + r * hidden_gates[:, 2 * hidden:])
    return (1 - z) * n + z * h


# ----------------------------------------------------------------------------------------------
# The time loops of one LSTM-family layer, forward and backward (backpropagation through time).


def lstm_layer_forward(projected: Tensor, h: Tensor, c: Tensor, weight_hh_t: Tensor, peephole: Tensor | None,
                       coupled: bool) -> tuple[Tensor, Tensor, Tensor]:
    """projected (seq, batch, G*H) = x W_ih^T + b for every step; h, c (batch, H); weight_hh_t
    (H, G*H) -> hs (seq, batch, H), cs (seq + 1, batch, H) = c_0 .. c_T, acts (seq, batch, G*H).

    Per step one addmm and one element-wise update; scripted on CPU, so no Python per step.
    """
    hs, cs, acts = [], [c], []
    for t in range(projected.shape[0]):
        gates = torch.addmm(projected[t], h, weight_hh_t)                 # (batch, G*H)
        h, c, act = lstm_pointwise(gates, c, peephole, coupled)
        h = h.to(projected.dtype)
        hs.append(h)
        cs.append(c)
        acts.append(act)
    return torch.stack(hs), torch.stack(cs), torch.stack(acts)


def triton_layer_forward(projected: Tensor, h: Tensor, c: Tensor, weight_hh_t: Tensor, peephole: Tensor | None,
                         coupled: bool) -> tuple[Tensor, Tensor, Tensor]:
    """lstm_layer_forward with the Triton kernel as the element-wise update (CUDA tensors)."""
    hs, cs, acts = [], [c], []
    for t in range(projected.shape[0]):
        gates = torch.addmm(projected[t], h, weight_hh_t)
        h, c, act = triton_lstm_pointwise(gates, c, peephole, coupled)
        h = h.to(projected.dtype)
        hs.append(h)
        cs.append(c)
        acts.append(act)
    return torch.stack(hs), torch.stack(cs), torch.stack(acts)


def lstm_layer_backward(grad_hs: Tensor, grad_c_last: Tensor, acts: Tensor, cs: Tensor, weight_hh: Tensor,
                        peephole: Tensor | None, coupled: bool) -> tuple[Tensor, Tensor, Tensor]:
    """grad_hs (seq, batch, H) and grad_c_last (batch, H) from above -> grad_gates (seq, batch,
    G*H) (= the gradient of `projected`), grad_h0, grad_c0. weight_hh (G*H, H)."""
    grad_gates = torch.empty_like(acts)
    grad_h = torch.zeros_like(grad_hs[0])
    grad_c = grad_c_last
    for t in range(acts.shape[0] - 1, -1, -1):
        grad, grad_c = lstm_pointwise_backward(acts[t], cs[t], cs[t + 1], peephole, coupled,
                                               grad_h + grad_hs[t], grad_c)
        grad_gates[t] = grad
        grad_h = torch.mm(grad.to(weight_hh.dtype), weight_hh)           # into h_{t-1}
    return grad_gates, grad_h, grad_c


def peephole_grad(grad_gates: Tensor, cs: Tensor) -> Tensor:
    """(3H,) gradient of p_i, p_f, p_o from all steps at once: p_i, p_f multiply c_{t-1}, p_o c_t."""
    hidden = cs.shape[-1]
    before, after = cs[:-1].to(grad_gates.dtype), cs[1:].to(grad_gates.dtype)
    return torch.cat([(grad_gates[..., :hidden] * before).sum((0, 1)),
                      (grad_gates[..., hidden: 2 * hidden] * before).sum((0, 1)),
                      (grad_gates[..., 3 * hidden:] * after).sum((0, 1))])


class LstmLayer(torch.autograd.Function):
    """One LSTM-family layer and direction over the whole sequence, as one autograd node.

    Forward: the time loop (scripted on CPU, Triton element-wise kernel on CUDA). Backward: the
    time loop in reverse with the hand-written element-wise gradients; the gradient of W_hh is then
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
        grad_gates, grad_h0, grad_c0 = compiled(lstm_layer_backward)(
            grad_hs.contiguous(), grad_c_last.contiguous(), acts, cs, weight, peephole, ctx.coupled)
        h_prev = torch.cat([h0.to(hs.dtype).unsqueeze(0), hs[:-1]])       # (seq, batch, H)
        grad_weight_hh = grad_gates.flatten(0, 1).t().mm(h_prev.flatten(0, 1).to(grad_gates.dtype))
        grad_peephole = peephole_grad(grad_gates, cs).to(peephole.dtype) if peephole is not None else None
        projected_dtype, h0_dtype, c0_dtype, weight_dtype = ctx.dtypes
        return (grad_gates.to(projected_dtype), grad_h0.to(h0_dtype), grad_c0.to(c0_dtype),
                grad_weight_hh.to(weight_dtype), grad_peephole, None)


# ----------------------------------------------------------------------------------------------
# TorchScript on CPU, Triton on CUDA

try:  # triton ships with CUDA builds of torch; a CPU install has none
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - a broken triton install must not break the forecaster
    triton = None

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
            return triton_layer_forward(projected, h, c, weight_hh_t, peephole, coupled)
        except Exception as exc:  # noqa: BLE001 - said and recorded, never silent
            record_fallback("triton", f"the Triton LSTM kernel failed ({type(exc).__name__}: "
                                      f"{_first_line(exc)}); using the TorchScript loop")
            USE_TRITON = False
    return compiled(lstm_layer_forward)(projected, h, c, weight_hh_t, peephole, coupled)


if triton is not None:
    @triton.jit
    def _tanh(x):
        # tanh through sigmoid: tl has no portable tanh across triton versions
        return 2.0 * tl.sigmoid(2.0 * x) - 1.0

    @triton.jit
    def _lstm_pointwise_kernel(gates_ptr, c_ptr, peephole_ptr, h_ptr, c_new_ptr, acts_ptr,
                               n_elements, hidden,
                               COUPLED: tl.constexpr, PEEPHOLE: tl.constexpr, BLOCK: tl.constexpr):
        """One program per BLOCK elements of (batch, H); gate k of element (b, j) sits at
        b * G * H + k * H + j in gates and acts. Mirrors lstm_pointwise line by line."""
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n_elements
        row = offsets // hidden
        col = offsets % hidden
        c = tl.load(c_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if COUPLED:
            gate = row * (3 * hidden) + col
            f = tl.sigmoid(tl.load(gates_ptr + gate, mask=mask, other=0.0).to(tl.float32))
            g = _tanh(tl.load(gates_ptr + gate + hidden, mask=mask, other=0.0).to(tl.float32))
            c_new = f * c + (1.0 - f) * g
            o = tl.sigmoid(tl.load(gates_ptr + gate + 2 * hidden, mask=mask, other=0.0).to(tl.float32))
            tl.store(acts_ptr + gate, f.to(acts_ptr.dtype.element_ty), mask=mask)
            tl.store(acts_ptr + gate + hidden, g.to(acts_ptr.dtype.element_ty), mask=mask)
            tl.store(acts_ptr + gate + 2 * hidden, o.to(acts_ptr.dtype.element_ty), mask=mask)
        else:
            gate = row * (4 * hidden) + col
            i_pre = tl.load(gates_ptr + gate, mask=mask, other=0.0).to(tl.float32)
            f_pre = tl.load(gates_ptr + gate + hidden, mask=mask, other=0.0).to(tl.float32)
            o_pre = tl.load(gates_ptr + gate + 3 * hidden, mask=mask, other=0.0).to(tl.float32)
            if PEEPHOLE:
                i_pre += tl.load(peephole_ptr + col, mask=mask, other=0.0).to(tl.float32) * c
                f_pre += tl.load(peephole_ptr + hidden + col, mask=mask, other=0.0).to(tl.float32) * c
            i = tl.sigmoid(i_pre)
            f = tl.sigmoid(f_pre)
            g = _tanh(tl.load(gates_ptr + gate + 2 * hidden, mask=mask, other=0.0).to(tl.float32))
            c_new = f * c + i * g
            if PEEPHOLE:
                o_pre += tl.load(peephole_ptr + 2 * hidden + col, mask=mask, other=0.0).to(tl.float32) * c_new
            o = tl.sigmoid(o_pre)
            tl.store(acts_ptr + gate, i.to(acts_ptr.dtype.element_ty), mask=mask)
            tl.store(acts_ptr + gate + hidden, f.to(acts_ptr.dtype.element_ty), mask=mask)
            tl.store(acts_ptr + gate + 2 * hidden, g.to(acts_ptr.dtype.element_ty), mask=mask)
            tl.store(acts_ptr + gate + 3 * hidden, o.to(acts_ptr.dtype.element_ty), mask=mask)
        h = o * _tanh(c_new)
        tl.store(h_ptr + offsets, h.to(h_ptr.dtype.element_ty), mask=mask)
        tl.store(c_new_ptr + offsets, c_new.to(c_new_ptr.dtype.element_ty), mask=mask)


def triton_lstm_pointwise(gates: Tensor, c: Tensor, peephole: Tensor | None, coupled: bool
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """lstm_pointwise as one Triton kernel (same signature and results, float32 inside).

    Outputs are in the promoted dtype of the inputs, as the pure-torch twin's are.
    """
    gates, c = gates.contiguous(), c.contiguous()
    dtype = torch.promote_types(gates.dtype, c.dtype)
    if peephole is not None:
        peephole = peephole.contiguous()
        dtype = torch.promote_types(dtype, peephole.dtype)
    h = torch.empty(c.shape, device=c.device, dtype=dtype)
    c_new = torch.empty(c.shape, device=c.device, dtype=dtype)
    acts = torch.empty(gates.shape, device=gates.device, dtype=dtype)
    n_elements, block = c.numel(), 1024
    grid = (triton.cdiv(n_elements, block),)
    _lstm_pointwise_kernel[grid](gates, c, peephole if peephole is not None else gates, h, c_new, acts,
                                 n_elements, c.shape[1], COUPLED=coupled, PEEPHOLE=peephole is not None,
                                 BLOCK=block)
    return h, c_new, acts


# ----------------------------------------------------------------------------------------------
# The fast path of one layer and direction


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


# ----------------------------------------------------------------------------------------------
# The encoder


class RecurrentEncoder(nn.Module):
    """Stacked (optionally bidirectional) recurrent encoder with nn.LSTM(batch_first=True)'s
    call contract: encoder(inputs, state=None) -> (states, final), where

        inputs (batch, seq, input_size); states (batch, seq, H * directions), the last layer's h
        at every step, directions concatenated (forward first);
        final  (h_n, c_n) for the LSTM family, h_n for gru, each (layers * directions, batch, H)
               ordered layer 0 forward, layer 0 backward, layer 1 forward, ...; `state` the same.

    Dropout acts on the outputs of every layer but the last, in training only (as nn.LSTM).
    The backward direction runs the same step on the reversed sequence and is reversed back, so
    states[:, t] of both directions belong to input step t.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, layers: int = 1,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None):
        super().__init__()
        self.cell = check_cell(cell)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, layers
        self.dropout, self.bidirectional, self.batch_first = float(dropout), bidirectional, True
        self.fast = True  # False: forward runs the step-by-step reference
        rows, factory = GATE_BLOCKS[cell] * hidden_size, {"device": device, "dtype": dtype}
        for layer in range(layers):
            n = input_size if layer == 0 else encoder_output_size(hidden_size, bidirectional)
            for suffix in self._suffixes():
                name = f"l{layer}{suffix}"
                self.register_parameter(f"weight_ih_{name}", nn.Parameter(torch.empty(rows, n, **factory)))
                self.register_parameter(f"weight_hh_{name}", nn.Parameter(torch.empty(rows, hidden_size, **factory)))
                self.register_parameter(f"bias_ih_{name}", nn.Parameter(torch.empty(rows, **factory)))
                self.register_parameter(f"bias_hh_{name}", nn.Parameter(torch.empty(rows, **factory)))
                if cell == "peephole":
                    self.register_parameter(f"peephole_{name}", nn.Parameter(torch.empty(3 * hidden_size, **factory)))
        self.reset_parameters()

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        """torch's rule for every parameter, peepholes included: U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def weights(self, layer: int, direction: int) -> LayerWeights:
        name = f"l{layer}{self._suffixes()[direction]}"
        peephole = getattr(self, f"peephole_{name}") if self.cell == "peephole" else None
        return LayerWeights(getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}"),
                            getattr(self, f"bias_ih_{name}"), getattr(self, f"bias_hh_{name}"), peephole)

    def forward(self, inputs: Tensor, state=None):
        return self._run(inputs, state, run_fast if self.fast else run_reference)

    def reference_forward(self, inputs: Tensor, state=None):
        """The same computation one step at a time with the equations written out."""
        return self._run(inputs, state, run_reference)

    def _initial_state(self, inputs: Tensor, state) -> tuple[Tensor, ...]:
        if state is None:
            directions = len(self._suffixes())
            zeros = inputs.new_zeros(self.num_layers * directions, inputs.shape[0], self.hidden_size)
            return (zeros, zeros) if self.cell in LSTM_FAMILY else (zeros,)
        return tuple(state) if self.cell in LSTM_FAMILY else (state,)

    def _run(self, inputs: Tensor, state, run_layer):
        initial = self._initial_state(inputs, state)            # each (layers * dirs, batch, H)
        directions = len(self._suffixes())
        layer_input, finals = inputs, []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                start = tuple(s[layer * directions + direction] for s in initial)
                sequence = layer_input.flip(1) if direction else layer_input
                out, end = run_layer(self.cell, sequence, start, self.weights(layer, direction))
                outputs.append(out.flip(1) if direction else out)  # (batch, seq, H)
                finals.append(end)
            layer_input = torch.cat(outputs, dim=2) if directions == 2 else outputs[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        final = tuple(torch.stack([end[k] for end in finals]) for k in range(len(initial)))
        # (batch, seq, H * directions); not necessarily contiguous (nn.LSTM's is not always either)
        return layer_input, (final if self.cell in LSTM_FAMILY else final[0])

    def extra_repr(self) -> str:
        return (f"{self.cell}, {self.input_size}, {self.hidden_size}, layers={self.num_layers}, "
                f"dropout={self.dropout}, bidirectional={self.bidirectional}")


# ----------------------------------------------------------------------------------------------
# Factory, forget-gate bias, and the mapping to and from torch's modules


def make_encoder(cell: str, input_size: int, hidden_size: int, layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False) -> nn.Module:
    """The encoder for `cell`, forget-gate bias 1 for the LSTM family.

    lstm and gru are torch's own nn.LSTM / nn.GRU (batch_first=True; cuDNN on CUDA), the others
    a RecurrentEncoder; all share the call contract and the parameter names.
    """
    check_cell(cell)
    dropout = dropout if layers > 1 else 0.0  # between layers only; torch warns otherwise
    kinds = {"lstm": nn.LSTM, "gru": nn.GRU}
    if cell in kinds:
        encoder = kinds[cell](input_size, hidden_size, num_layers=layers, dropout=dropout,
                              bidirectional=bidirectional, batch_first=True)
    else:
        encoder = RecurrentEncoder(cell, input_size, hidden_size, layers, dropout, bidirectional)
    init_forget_bias(encoder)
    return encoder


def encoder_cell(encoder: nn.Module) -> str:
    """The cell name of any encoder make_encoder returns."""
    if isinstance(encoder, RecurrentEncoder):
        return encoder.cell
    if isinstance(encoder, nn.LSTM):
        return "lstm"
    if isinstance(encoder, nn.GRU):
        return "gru"
    raise TypeError(f"not a recurrent encoder: {type(encoder).__name__}")


def forget_gate_block(cell: str) -> int | None:
    """Index of the forget gate's block in the gate order; None for gru (it has no forget gate)."""
    return {"lstm": 1, "peephole": 1, "cifg": 0}.get(check_cell(cell))


def init_forget_bias(encoder: nn.Module, value: float = 1.0) -> None:
    """Forget-gate bias `value` (Gers et al. 2000): remember by default early in training.

    The gates see bias_ih + bias_hh, so the forget block of bias_ih is set to `value` and that of
    bias_hh to 0. A GRU is left as it is.
    """
    block = forget_gate_block(encoder_cell(encoder))
    if block is None:
        return
    rows = slice(block * encoder.hidden_size, (block + 1) * encoder.hidden_size)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if name.startswith("bias_"):
                param[rows] = value if name.startswith("bias_ih") else 0.0


def _from_torch(module: nn.Module, cell: str) -> RecurrentEncoder:
    if getattr(module, "proj_size", 0) or not module.bias:
        raise ValueError("only torch modules with biases and without projections (proj_size=0) map to cells")
    first = next(module.parameters())
    encoder = RecurrentEncoder(cell, module.input_size, module.hidden_size, module.num_layers, module.dropout,
                               module.bidirectional, device=first.device, dtype=first.dtype)
    encoder.load_state_dict(module.state_dict())  # same names, shapes and gate order
    return encoder


def _to_torch(encoder: RecurrentEncoder, cell: str, kind: type) -> nn.Module:
    if encoder.cell != cell:
        raise ValueError(f"a {encoder.cell!r} encoder has no torch.nn.{kind.__name__} equivalent")
    first = next(encoder.parameters())
    module = kind(encoder.input_size, encoder.hidden_size, num_layers=encoder.num_layers,
                  dropout=encoder.dropout, bidirectional=encoder.bidirectional, batch_first=True,
                  device=first.device, dtype=first.dtype)
    module.load_state_dict(encoder.state_dict())
    return module


def from_torch_lstm(lstm: nn.LSTM) -> RecurrentEncoder:
    """A cell='lstm' RecurrentEncoder computing exactly what `lstm` computes (weights copied)."""
    return _from_torch(lstm, "lstm")


def to_torch_lstm(encoder: RecurrentEncoder) -> nn.LSTM:
    """The nn.LSTM(batch_first=True) of a cell='lstm' encoder (weights copied)."""
    return _to_torch(encoder, "lstm", nn.LSTM)


def from_torch_gru(gru: nn.GRU) -> RecurrentEncoder:
    return _from_torch(gru, "gru")


def to_torch_gru(encoder: RecurrentEncoder) -> nn.GRU:
    return _to_torch(encoder, "gru", nn.GRU)
