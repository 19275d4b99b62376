"""Grid LSTM (Kalchbrenner, Danihelka & Graves 2015, "Grid Long Short-Term Memory") over the two
dimensions of a stacked encoder, time and depth: the layers are linked by LSTM transforms along
depth as well as along time, and each dimension has its own memory.

Block (t, l), for step t and layer l, receives the time state (h^T_{t-1,l}, m^T_{t-1,l}) from the
block before it in the same layer and the depth state (h^D_{t,l-1}, m^D_{t,l-1}) from the block
below it at the same step. Both transforms read the same concatenation H = [h^T_{t-1,l}; h^D_{t,l-1}]
(2H features) and each dimension d in {T, D} has its own weights W_d (4H, 2H) and bias b_d (4H,):

    i_d = sigmoid(W_d^i H + b_d^i)    f_d = sigmoid(W_d^f H + b_d^f)    g_d = tanh(W_d^g H + b_d^g)
    o_d = sigmoid(W_d^o H + b_d^o)    m'_d = f_d * m_d + i_d * g_d       h'_d = o_d * tanh(m'_d)

(h'_T, m'_T) = (h^T_{t,l}, m^T_{t,l}) goes on to block (t+1, l); (h'_D, m'_D) = (h^D_{t,l}, m^D_{t,l})
goes up to block (t, l+1). Gate blocks in torch's order i, f, g, o; forget-gate bias 1 in both.

The input (our choice where the paper leaves it open; the paper projects the input onto the grid's
first hidden vector): the bottom block's depth state is h^D_{t,-1} = P x_t, a learned projection
P (H, input_size) without bias (a bias there would only add to b_T and b_D), and m^D_{t,-1} = 0.
The time state of every layer starts at the encoder's initial state (h_0, c_0) (zeros by default).

What the rest of the model reads (nn.LSTM's call contract, as RecurrentEncoder):
  states  (batch, seq, H * directions): the top layer's depth output h^D_{t,L-1} at every step, the
          vector the grid hands "up" to the head;
  final   (h_n, c_n), each (layers * directions, batch, H): every layer's last time state
          (h^T_{T,l}, m^T_{T,l}), ordered layer 0 forward, layer 0 backward, layer 1 forward, ...
Bidirectional: each direction is its own grid (its own P and blocks) over the sequence in its
order; only the top outputs are concatenated (forward first), so states[:, t] of both directions
belong to input step t. Dropout (training only) acts on h^D between layers, not on memories.

Two ways to run the same parameters:
  reference  the grid walked block by block, time outer, layers inner, each block grid_step
             (equations.py) with every gate written out. The definition the tests hold to.
  fast       layer by layer (block (t, l) needs only layer l-1's outputs and step t-1 of its own
             layer). The time transform of a layer is exactly an LSTM layer whose input is the
             depth hidden h^D_{t,l-1} (W_T = [U | W]: hidden columns, input columns), so it runs
             through LstmLayer (one input matmul for all steps, the scripted / Triton loop, the
             hand-written backward); the depth transform has no recurrence of its own given the
             time loop's hidden states, so it is ONE matmul and one element-wise update over all
             steps at once (autograd).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import RecurrentEncoder
from .equations import GridWeights, grid_step
from .fastpath import LstmLayer


class GridEncoder(RecurrentEncoder):
    """The Grid LSTM encoder (see the module docstring); RecurrentEncoder("grid", ...) builds one.

    Parameters, per direction (suffix "" or "_reverse"): weight_input{suffix} (H, input_size) = P;
    per layer k: weight_time_l{k}{suffix}, weight_depth_l{k}{suffix} (4H, 2H) and bias_time_l{k}{suffix},
    bias_depth_l{k}{suffix} (4H,). Count: equations.parameter_count.
    """

    def _register_parameters(self, factory: dict) -> None:
        hidden, rows = self.hidden_size, 4 * self.hidden_size
        for suffix in self._suffixes():
            self.register_parameter(f"weight_input{suffix}",
                                    nn.Parameter(torch.empty(hidden, self.input_size, **factory)))
        for layer in range(self.num_layers):
            for suffix in self._suffixes():
                for dimension in ("time", "depth"):
                    name = f"{dimension}_l{layer}{suffix}"
                    self.register_parameter(f"weight_{name}", nn.Parameter(torch.empty(rows, 2 * hidden, **factory)))
                    self.register_parameter(f"bias_{name}", nn.Parameter(torch.empty(rows, **factory)))

    def weights(self, layer: int, direction: int) -> GridWeights:
        name = f"l{layer}{self._suffixes()[direction]}"
        return GridWeights(getattr(self, f"weight_time_{name}"), getattr(self, f"bias_time_{name}"),
                           getattr(self, f"weight_depth_{name}"), getattr(self, f"bias_depth_{name}"))

    def forward(self, inputs: Tensor, state=None):
        return self._walk(inputs, state, grid_fast if self.fast else grid_reference)

    def reference_forward(self, inputs: Tensor, state=None):
        """The same computation block by block with the equations written out."""
        return self._walk(inputs, state, grid_reference)

    def _walk(self, inputs: Tensor, state, run_grid):
        h0, c0 = self._initial_state(inputs, state)          # each (layers * dirs, batch, H)
        directions = len(self._suffixes())
        dropout = self.dropout if self.training else 0.0
        outputs, h_n, c_n = [], [None] * len(h0), [None] * len(c0)
        for direction, suffix in enumerate(self._suffixes()):
            sequence = inputs.flip(1) if direction else inputs
            starts = [(h0[k * directions + direction], c0[k * directions + direction])
                      for k in range(self.num_layers)]
            blocks = [self.weights(k, direction) for k in range(self.num_layers)]
            top, finals = run_grid(sequence, getattr(self, f"weight_input{suffix}"), starts, blocks, dropout)
            outputs.append(top.flip(1) if direction else top)  # (batch, seq, H)
            for k, (h, c) in enumerate(finals):
                h_n[k * directions + direction], c_n[k * directions + direction] = h, c
        states = torch.cat(outputs, dim=2) if directions == 2 else outputs[0]
        return states, (torch.stack(h_n), torch.stack(c_n))


def grid_reference(inputs: Tensor, weight_input: Tensor, starts: list[tuple[Tensor, Tensor]],
                   blocks: list[GridWeights], dropout: float) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """One direction's grid, block by block: inputs (batch, seq, in) -> the top layer's h^D at
    every step (batch, seq, H) and each layer's last time state (h^T, m^T)."""
    time_states = list(starts)
    tops = []
    for t in range(inputs.shape[1]):
        h_depth = inputs[:, t] @ weight_input.T                  # P x_t, (batch, H)
        depth_state = (h_depth, torch.zeros_like(h_depth))      # m^D_{t,-1} = 0
        for layer, w in enumerate(blocks):
            time_states[layer], depth_state = grid_step(time_states[layer], depth_state, w)
            if dropout and layer < len(blocks) - 1:
                depth_state = (F.dropout(depth_state[0], dropout, training=True), depth_state[1])
        tops.append(depth_state[0])
    return torch.stack(tops, dim=1), time_states


def grid_fast(inputs: Tensor, weight_input: Tensor, starts: list[tuple[Tensor, Tensor]],
              blocks: list[GridWeights], dropout: float) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """The same numbers as grid_reference, layer by layer (see the module docstring)."""
    h_depth = F.linear(inputs.transpose(0, 1), weight_input)   # (seq, batch, H)
    m_depth = None                                             # zero below layer 0
    finals = []
    for layer, ((h0, c0), w) in enumerate(zip(starts, blocks, strict=True)):
        hidden = h0.shape[-1]
        # The time transform: an LSTM layer over the depth hiddens, W_T = [U | W].
        projected = F.linear(h_depth, w.weight_time[:, hidden:], w.bias_time)  # (seq, batch, 4H)
        hs, c_last = LstmLayer.apply(projected, h0, c0, w.weight_time[:, :hidden], None, False)
        finals.append((hs[-1], c_last))
        # The depth transform at every step at once, from h^T_{t-1,l} and h^D_{t,l-1}.
        h_prev = torch.cat([h0.to(hs.dtype).unsqueeze(0), hs[:-1]])           # (seq, batch, H)
        gates = F.linear(torch.cat([h_prev, h_depth.to(hs.dtype)], dim=-1), w.weight_depth, w.bias_depth)
        h_depth, m_depth = _depth_update(gates, m_depth, c0.dtype)
        if dropout and layer < len(blocks) - 1:
            h_depth = F.dropout(h_depth, dropout, training=True)
    return h_depth.transpose(0, 1), finals


def _depth_update(gates: Tensor, m: Tensor | None, memory_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """m' = f m + i g, h' = o tanh(m') over (seq, batch, 4H) gates; m None is zero memory.
    h' in the gates' dtype (the matmul dtype under autocast), the memory in `memory_dtype`, as
    LstmLayer keeps its cell state."""
    i, f, g, o = gates.chunk(4, dim=-1)
    written = torch.sigmoid(i) * torch.tanh(g)
    m_new = (written if m is None else torch.sigmoid(f) * m + written).to(memory_dtype)
    h_new = torch.sigmoid(o) * torch.tanh(m_new)
    return h_new.to(gates.dtype), m_new
