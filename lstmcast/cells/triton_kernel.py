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
    """lstm_layer_forward with the Triton kernel as the element-wise update (CUDA tensors).

    Two launches a step (the addmm and the kernel) and no allocation: the kernel writes h_t, c_t
    and the activations straight into the layer's output buffers (h_t in projected's dtype, what
    the next addmm reads; c_t and the activations in the promoted dtype, as the twin's)."""
    seq, batch = projected.shape[0], h.shape[0]
    dtype = torch.promote_types(projected.dtype, c.dtype)
    if peephole is not None:
        peephole = peephole.contiguous()
        dtype = torch.promote_types(dtype, peephole.dtype)
    hs = torch.empty(seq, batch, c.shape[1], device=c.device, dtype=projected.dtype)
    cs = torch.empty(seq + 1, batch, c.shape[1], device=c.device, dtype=dtype)
    acts = torch.empty(seq, *projected.shape[1:], device=c.device, dtype=dtype)
    cs[0] = c
    gates = torch.empty_like(projected[0]) if seq else None
    for t in range(seq):
        torch.addmm(projected[t], h, weight_hh_t, out=gates)
        _launch_forward(gates, cs[t], peephole, coupled, hs[t], cs[t + 1], acts[t])
        h = hs[t]
    return hs, cs, acts


def triton_layer_backward(grad_hs: Tensor, grad_c_last: Tensor, acts: Tensor, cs: Tensor, weight_hh: Tensor,
                          peephole: Tensor | None, coupled: bool) -> tuple[Tensor, Tensor, Tensor]:
    """lstm_layer_backward with one Triton kernel a step for the element-wise gradients (CUDA).

    Per step the kernel reads the recurrent gradient and grad_hs[t] (summed in fp32), the
    activations and the two cell states, writes grad_gates[t] (and its copy in the weight's dtype
    for the matmul, where they differ) and updates grad_c in place; one mm then carries the
    gradient into h_{t-1}. Two launches a step instead of the scripted loop's dozen."""
    seq, batch, _ = acts.shape
    hidden = cs.shape[-1]
    grad_hs = grad_hs.contiguous()
    grad_gates = torch.empty_like(acts)
    grad_c = grad_c_last.to(cs.dtype).contiguous().clone()
    grad_h = torch.zeros(batch, hidden, device=acts.device, dtype=weight_hh.dtype)
    cast = grad_gates.dtype != weight_hh.dtype
    mm_in = torch.empty(batch, acts.shape[2], device=acts.device, dtype=weight_hh.dtype) if cast else None
    if peephole is not None:
        peephole = peephole.contiguous()
    for t in range(seq - 1, -1, -1):
        _launch_backward(acts[t], cs[t], cs[t + 1], peephole, coupled, grad_h, grad_hs[t], grad_c,
                         grad_gates[t], mm_in)
        torch.mm(mm_in if cast else grad_gates[t], weight_hh, out=grad_h)   # into h_{t-1}
    return grad_gates, grad_h, grad_c


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


    @triton.jit
    def _lstm_pointwise_backward_kernel(acts_ptr, c_ptr, c_new_ptr, peephole_ptr, grad_h_ptr, grad_out_ptr,
                                        grad_c_ptr, grad_gates_ptr, cast_ptr, n_elements, hidden,
                                        COUPLED: tl.constexpr, PEEPHOLE: tl.constexpr, CAST: tl.constexpr,
                                        BLOCK: tl.constexpr):
        """lstm_pointwise_backward for one step, element (b, j) per lane: grad_h = recurrent +
        from above (fp32); grad_c is read and overwritten (same lane) with the gradient of c_{t-1}."""
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n_elements
        row = offsets // hidden
        col = offsets % hidden
        c = tl.load(c_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        c_new = tl.load(c_new_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        grad_h = (tl.load(grad_h_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
                  + tl.load(grad_out_ptr + offsets, mask=mask, other=0.0).to(tl.float32))
        grad_c = tl.load(grad_c_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        tanh_c = _tanh(c_new)
        if COUPLED:
            gate = row * (3 * hidden) + col
            o = tl.load(acts_ptr + gate + 2 * hidden, mask=mask, other=0.0).to(tl.float32)
        else:
            gate = row * (4 * hidden) + col
            o = tl.load(acts_ptr + gate + 3 * hidden, mask=mask, other=0.0).to(tl.float32)
        grad_o = grad_h * tanh_c * o * (1.0 - o)
        total = grad_c + grad_h * o * (1.0 - tanh_c * tanh_c)
        if PEEPHOLE:
            total += grad_o * tl.load(peephole_ptr + 2 * hidden + col, mask=mask, other=0.0).to(tl.float32)
        if COUPLED:
            f = tl.load(acts_ptr + gate, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(acts_ptr + gate + hidden, mask=mask, other=0.0).to(tl.float32)
            grad_f = total * (c - g) * f * (1.0 - f)
            grad_g = total * (1.0 - f) * (1.0 - g * g)
            grad_c_prev = total * f
            tl.store(grad_gates_ptr + gate, grad_f.to(grad_gates_ptr.dtype.element_ty), mask=mask)
            tl.store(grad_gates_ptr + gate + hidden, grad_g.to(grad_gates_ptr.dtype.element_ty), mask=mask)
            tl.store(grad_gates_ptr + gate + 2 * hidden, grad_o.to(grad_gates_ptr.dtype.element_ty), mask=mask)
            if CAST:
                tl.store(cast_ptr + gate, grad_f.to(cast_ptr.dtype.element_ty), mask=mask)
                tl.store(cast_ptr + gate + hidden, grad_g.to(cast_ptr.dtype.element_ty), mask=mask)
                tl.store(cast_ptr + gate + 2 * hidden, grad_o.to(cast_ptr.dtype.element_ty), mask=mask)
        else:
            i = tl.load(acts_ptr + gate, mask=mask, other=0.0).to(tl.float32)
            f = tl.load(acts_ptr + gate + hidden, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(acts_ptr + gate + 2 * hidden, mask=mask, other=0.0).to(tl.float32)
            grad_i = total * g * i * (1.0 - i)
            grad_f = total * c * f * (1.0 - f)
            grad_g = total * i * (1.0 - g * g)
            grad_c_prev = total * f
            if PEEPHOLE:
                grad_c_prev += (grad_i * tl.load(peephole_ptr + col, mask=mask, other=0.0).to(tl.float32)
                                + grad_f * tl.load(peephole_ptr + hidden + col, mask=mask, other=0.0).to(tl.float32))
            tl.store(grad_gates_ptr + gate, grad_i.to(grad_gates_ptr.dtype.element_ty), mask=mask)
            tl.store(grad_gates_ptr + gate + hidden, grad_f.to(grad_gates_ptr.dtype.element_ty), mask=mask)
            tl.store(grad_gates_ptr + gate + 2 * hidden, grad_g.to(grad_gates_ptr.dtype.element_ty), mask=mask)
            tl.store(grad_gates_ptr + gate + 3 * hidden, grad_o.to(grad_gates_ptr.dtype.element_ty), mask=mask)
            if CAST:
                tl.store(cast_ptr + gate, grad_i.to(cast_ptr.dtype.element_ty), mask=mask)
                tl.store(cast_ptr + gate + hidden, grad_f.to(cast_ptr.dtype.element_ty), mask=mask)
                tl.store(cast_ptr + gate + 2 * hidden, grad_g.to(cast_ptr.dtype.element_ty), mask=mask)
                tl.store(cast_ptr + gate + 3 * hidden, grad_o.to(cast_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_c_ptr + offsets, grad_c_prev.to(grad_c_ptr.dtype.element_ty), mask=mask)


BLOCK = 1024


def _launch_forward(gates: Tensor, c: Tensor, peephole: Tensor | None, coupled: bool,
                    h: Tensor, c_new: Tensor, acts: Tensor) -> None:
    n_elements = c.numel()
    _lstm_pointwise_kernel[(triton.cdiv(n_elements, BLOCK),)](
        gates, c, peephole if peephole is not None else gates, h, c_new, acts, n_elements, c.shape[1],
        COUPLED=coupled, PEEPHOLE=peephole is not None, BLOCK=BLOCK)


def _launch_backward(acts: Tensor, c: Tensor, c_new: Tensor, peephole: Tensor | None, coupled: bool,
                     grad_h: Tensor, grad_out: Tensor, grad_c: Tensor, grad_gates: Tensor,
                     cast: Tensor | None) -> None:
    n_elements = c.numel()
    _lstm_pointwise_backward_kernel[(triton.cdiv(n_elements, BLOCK),)](
        acts, c, c_new, peephole if peephole is not None else acts, grad_h, grad_out, grad_c, grad_gates,
        cast if cast is not None else grad_gates, n_elements, c.shape[1],
        COUPLED=coupled, PEEPHOLE=peephole is not None, CAST=cast is not None, BLOCK=BLOCK)


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
    _launch_forward(gates, c, peephole, coupled, h, c_new, acts)
    return h, c_new, acts


def triton_lstm_pointwise_backward(acts: Tensor, c: Tensor, c_new: Tensor, peephole: Tensor | None, coupled: bool,
                                   grad_h: Tensor, grad_c_new: Tensor) -> tuple[Tensor, Tensor]:
    """lstm_pointwise_backward as one Triton kernel (same signature and results, float32 inside)."""
    acts, c, c_new = acts.contiguous(), c.contiguous(), c_new.contiguous()
    grad_gates = torch.empty_like(acts)
    grad_c = grad_c_new.to(c.dtype).contiguous().clone()
    if peephole is not None:
        peephole = peephole.contiguous()
    _launch_backward(acts, c, c_new, peephole, coupled, grad_h.contiguous(), torch.zeros_like(grad_h), grad_c,
                     grad_gates, None)
    return grad_gates, grad_c
