"""The ConvLSTM cell of Shi et al. (2015) and an encoder-forecaster of stacked ConvLSTM layers.

The cell, with `*` a convolution (zero padding, the frame keeps its size) and `∘` the Hadamard
product, exactly as in the paper (equations 3):

    i_t = σ(W_xi * X_t + W_hi * H_{t-1} + W_ci ∘ C_{t-1} + b_i)
    f_t = σ(W_xf * X_t + W_hf * H_{t-1} + W_cf ∘ C_{t-1} + b_f)
    C_t = f_t ∘ C_{t-1} + i_t ∘ tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)
    o_t = σ(W_xo * X_t + W_ho * H_{t-1} + W_co ∘ C_t + b_o)
    H_t = o_t ∘ tanh(C_t)

The peephole weights W_c· are tensors of the state's shape (hidden, height, width), so a model
belongs to its grid size. The eight input and hidden convolutions are computed as one
convolution of [X_t, H_{t-1}] (channels concatenated) into 4 x hidden channels, gates in the
order i, f, c, o: W_x· * X + W_h· * H + b· is exactly that convolution's output, block by block
(`gate_weights` splits it back; tests/test_convlstm.py checks the cell against the equations
written out one by one in float64).
"""

from __future__ import annotations

import torch
from torch import nn

GATES = ("i", "f", "c", "o")


class ConvLSTMCell(nn.Module):
    def __init__(self, in_channels: int, hidden: int, kernel: int, height: int, width: int):
        super().__init__()
        self.in_channels, self.hidden = in_channels, hidden
        # (4 x hidden, in + hidden, k, k): rows i, f, c, o; columns X then H.
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)
        self.w_ci = nn.Parameter(torch.zeros(hidden, height, width))
        self.w_cf = nn.Parameter(torch.zeros(hidden, height, width))
        self.w_co = nn.Parameter(torch.zeros(hidden, height, width))
        with torch.no_grad():   # remember by default (the forget gate's bias at 1, as for the LSTM)
            self.conv.bias[hidden:2 * hidden].fill_(1.0)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (batch, in, H, W), state (H_{t-1}, C_{t-1}) each (batch, hidden, H, W) -> (H_t, C_t)."""
        h, c = state
        gi, gf, gc, go = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        i = torch.sigmoid(gi + self.w_ci * c)
        f = torch.sigmoid(gf + self.w_cf * c)
        c_next = f * c + i * torch.tanh(gc)
        o = torch.sigmoid(go + self.w_co * c_next)
        return o * torch.tanh(c_next), c_next

    def gate_weights(self) -> dict[str, torch.Tensor]:
        """The paper's parameters by name: W_xi, W_hi, b_i, ..., W_ci, W_cf, W_co."""
        n, k = self.hidden, self.in_channels
        out = {}
        for g, name in enumerate(GATES):
            block = self.conv.weight[g * n:(g + 1) * n]
            out[f"W_x{name}"], out[f"W_h{name}"] = block[:, :k], block[:, k:]
            out[f"b_{name}"] = self.conv.bias[g * n:(g + 1) * n]
        out.update(W_ci=self.w_ci, W_cf=self.w_cf, W_co=self.w_co)
        return out


def cell_parameters(in_channels: int, hidden: int, kernel: int, height: int, width: int) -> int:
    """Parameters of one cell: 4 convolutions of the input and of the state with their biases,
    and 3 peephole tensors of the state's shape."""
    return 4 * hidden * (in_channels + hidden) * kernel * kernel + 4 * hidden + 3 * hidden * height * width


class ConvLSTMForecaster(nn.Module):
    """Encoder-forecaster (Shi et al., 2015, figure 3): `layers` stacked ConvLSTM cells read the
    `lookback` frames; a second stack of as many cells, started from the encoder's states, runs
    `horizon` more steps. At each forecast step a 1x1 convolution of every forecaster layer's
    hidden state gives the change from the previous frame (persistence plus a learned correction),
    and the frame so forecast is the forecaster's next input (the last observed frame first), so
    training and prediction run the same computation.

    (batch, lookback, channels, H, W) -> (batch, horizon, channels, H, W)
    """

    def __init__(self, channels: int, hidden: int, layers: int, kernel: int, height: int, width: int,
                 horizon: int, dropout: float = 0.0):
        super().__init__()
        self.horizon, self.hidden, self.layers = horizon, hidden, layers
        self.encoder = nn.ModuleList(
            ConvLSTMCell(channels if k == 0 else hidden, hidden, kernel, height, width) for k in range(layers))
        self.forecaster = nn.ModuleList(
            ConvLSTMCell(channels if k == 0 else hidden, hidden, kernel, height, width) for k in range(layers))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(hidden * layers, channels, 1)
        with torch.no_grad():   # start as persistence: the change is 0 until it is learned
            self.head.weight.zero_()
            self.head.bias.zero_()

    def forward(self, frames: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        batch, steps, _, height, width = frames.shape
        zeros = frames.new_zeros(batch, self.hidden, height, width)
        states = [(zeros, zeros) for _ in range(self.layers)]
        for t in range(steps):
            x = frames[:, t]
            for k, cell in enumerate(self.encoder):
                states[k] = cell(x, states[k])
                x = states[k][0]
        last, outputs = frames[:, -1], []
        for _ in range(horizon or self.horizon):
            x = last
            for k, cell in enumerate(self.forecaster):
                states[k] = cell(x, states[k])
                x = states[k][0]
            change = self.head(self.dropout(torch.cat([h for h, _ in states], dim=1)))
            last = last + change
            outputs.append(last)
        return torch.stack(outputs, dim=1)


def forecaster_parameters(channels: int, hidden: int, layers: int, kernel: int, height: int, width: int) -> int:
    """Parameters of ConvLSTMForecaster: two stacks of cells and the 1x1 head."""
    stack = sum(cell_parameters(channels if k == 0 else hidden, hidden, kernel, height, width) for k in range(layers))
    return 2 * stack + hidden * layers * channels + channels
