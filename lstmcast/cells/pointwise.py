"""The fused element-wise update of a step (everything after the matmuls) and its hand-written
backward, and the time loops of one LSTM-family layer built from them (scripted on CPU by
fastpath.compiled). Pure functions of tensors: no switches, no dispatch."""

from __future__ import annotations

import torch
from torch import Tensor

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
