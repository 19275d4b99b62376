"""The fused element-wise LSTM update as one Triton kernel (CUDA), and the layer's time loop
with it. `triton` is None where it is not installed (a CPU build of torch); the kernel is then
not defined and fastpath never calls into this module."""

from __future__ import annotations

import torch
from torch import Tensor

try:  # triton ships with CUDA builds of torch; a CPU install has none
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - a broken triton install must not break the forecaster
    triton = None


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
