"""The cells' definitions: names, parameter layout and count, and the reference steps (each
cell's equations written out gate by gate, one time step at a time). See the package docstring."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..keys import CELLS  # model.cell's values, declared with the key

GATE_BLOCKS = {"lstm": 4, "peephole": 4, "cifg": 3, "gru": 3, "grid": 4}  # grid: per transform
LSTM_FAMILY = ("lstm", "peephole", "cifg", "grid")  # their state is (h, c); gru's is h


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


class GridWeights(NamedTuple):
    """One Grid LSTM block's parameters (layer l, one direction): one LSTM transform per
    dimension, each reading H = [h^T; h^D] (columns: the time half, then the depth half), gate
    blocks i, f, g, o; one bias each (the paper's; nothing maps to torch here)."""
    weight_time: Tensor    # (4H, 2H)
    bias_time: Tensor      # (4H,)
    weight_depth: Tensor   # (4H, 2H)
    bias_depth: Tensor     # (4H,)


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

        grid      H n + layers * 2 * 4H(2H + 1)   per direction, n = input_size: the input
                  projection P (no bias), then per layer a time and a depth transform, each
                  (4H, 2H) weights and one (4H,) bias. Each direction is its own grid.
    """
    directions = 2 if bidirectional else 1
    hidden = hidden_size
    if check_cell(cell) == "grid":
        return directions * (hidden * input_size + layers * 2 * 4 * hidden * (2 * hidden + 1))
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


def _lstm_transform(H: Tensor, m: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """One dimension's LSTM transform of a Grid LSTM block: gates from W H + b, memory m."""
    W_i, W_f, W_c, W_o = weight.chunk(4)
    b_i, b_f, b_c, b_o = bias.chunk(4)
    f = torch.sigmoid(H @ W_f.T + b_f)
    i = torch.sigmoid(H @ W_i.T + b_i)
    g = torch.tanh(H @ W_c.T + b_c)
    m = f * m + i * g
    o = torch.sigmoid(H @ W_o.T + b_o)
    h = o * torch.tanh(m)
    return h, m


def grid_step(time_state: tuple[Tensor, Tensor], depth_state: tuple[Tensor, Tensor], w: GridWeights
              ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Grid LSTM block (t, l) (Kalchbrenner et al. 2015): (h^T, m^T) from block (t-1, l),
    (h^D, m^D) from block (t, l-1) -> the new time state (to t+1) and depth state (to l+1).
    Both transforms read the same H = [h^T; h^D]; each keeps its own memory."""
    (h_time, m_time), (h_depth, m_depth) = time_state, depth_state
    H = torch.cat([h_time, h_depth], dim=1)                       # (batch, 2H)
    return (_lstm_transform(H, m_time, w.weight_time, w.bias_time),
            _lstm_transform(H, m_depth, w.weight_depth, w.bias_depth))


# The cells whose layers run one after the other (run_reference). grid's block is grid_step: its
# layers are linked inside the block, and gridlstm.py walks the grid.
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

