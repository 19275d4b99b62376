"""The forecaster: a stacked LSTM encoder over the lookback window and a direct multi-horizon head."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .windows import N_FEATURES


class Forecaster(nn.Module):
    """(batch, lookback, features) -> (batch, horizon), all horizon steps at once.

    The encoder is torch.nn.LSTM, which runs the fused cuDNN kernel on CUDA.
    """

    def __init__(self, config: ModelConfig, horizon: int, input_size: int = N_FEATURES):
        super().__init__()
        self.horizon = horizon
        self.encoder = nn.LSTM(input_size, config.hidden_size, num_layers=config.layers,
                               batch_first=True,
                               dropout=config.dropout if config.layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, horizon)
        init_forget_bias(self.encoder)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        states, _ = self.encoder(inputs)               # (batch, lookback, hidden)
        last = self.dropout(states[:, -1])             # (batch, hidden)
        return self.head(last)                         # (batch, horizon)


def init_forget_bias(lstm: nn.LSTM, value: float = 1.0) -> None:
    """Forget-gate bias 1 (Gers et al. 2000): remember by default early in training.

    torch orders the gates (input, forget, cell, output) and adds bias_ih and bias_hh, so the
    forget slice of bias_ih is set to `value` and that of bias_hh to 0.
    """
    hidden = lstm.hidden_size
    with torch.no_grad():
        for name, param in lstm.named_parameters():
            if name.startswith("bias_"):
                param[hidden: 2 * hidden] = value if name.startswith("bias_ih") else 0.0


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def forecast_windows(model: nn.Module, inputs_of, starts: torch.Tensor,
                     autocast: torch.dtype | None, batch_size: int = 4096) -> torch.Tensor:
    """Scaled forecasts (n, horizon) in fp32 for windows `starts`, in batches, in eval mode.

    `inputs_of(starts) -> (batch, lookback, features)` builds the inputs (SeriesBuffer.inputs).
    """
    was_training = model.training
    model.eval()
    out = []
    for chunk in torch.split(starts, batch_size):
        with torch.autocast(chunk.device.type, dtype=autocast or torch.float32,
                            enabled=autocast is not None):
            out.append(model(inputs_of(chunk)).float())
    model.train(was_training)
    if not out:
        return torch.zeros(0, getattr(model, "horizon", 0))
    return torch.cat(out)
