"""The forecaster: a stacked LSTM encoder over the lookback window and a direct multi-horizon head."""

from __future__ import annotations

import torch
from torch import nn

from .config import Config, ModelConfig
from .windows import N_FEATURES


class Forecaster(nn.Module):
    """(batch, lookback, features) -> (batch, horizon), all horizon steps at once.

    The encoder is torch.nn.LSTM, which runs the fused cuDNN kernel on CUDA.
    """

    def __init__(self, config: ModelConfig, horizon: int, lookback: int,
                 input_size: int = N_FEATURES):
        super().__init__()
        self.horizon = horizon
        self.lookback = lookback  # reads the last `lookback` steps of longer inputs (ensembles)
        self.window_norm = config.window_norm
        self.encoder = nn.LSTM(input_size, config.hidden_size, num_layers=config.layers,
                               batch_first=True,
                               dropout=config.dropout if config.layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, horizon)
        init_forget_bias(self.encoder)

    def normalized(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forecast in window-normalised units: (prediction, loc, scale), the last two (batch, 1).

        Training computes its loss here, on (target - loc) / scale, so that every window weighs
        the same whatever the level of its series.
        """
        inputs = inputs[:, -self.lookback:]
        loc, scale = window_stats(inputs, self.window_norm)
        if self.window_norm != "none":
            observed = inputs[..., 1]
            values = (inputs[..., 0] - loc) / scale * observed  # padding stays 0
            inputs = torch.stack([values, observed], dim=-1)
        states, _ = self.encoder(inputs)                       # (batch, lookback, hidden)
        values = inputs[..., 0]
        last = self.dropout(states[:, -1])                     # (batch, hidden)
        # The head learns a correction to the naive forecast (the last observed value): an
        # untrained model already forecasts like naive, which keeps ratio losses (sMAPE) out of
        # the flat region where a forecast near 0 sits against a target near 1.
        return self.head(last) + values[:, -1:], loc, scale   # (batch, horizon)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, lookback, features) -> (batch, horizon) in the inputs' units."""
        prediction, loc, scale = self.normalized(inputs)
        return prediction.float() * scale + loc


def window_stats(inputs: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window (loc, scale), each (batch, 1), from the observed input values only.

    none: (0, 1). standard: mean and standard deviation. mean: (0, mean |x|), a pure rescaling
    for positive data (sales, counts), which keeps ratios such as sMAPE unchanged.
    """
    values, observed = inputs[..., 0].float(), inputs[..., 1].float()
    if mode == "none":
        ones = values.new_ones(values.shape[0], 1)
        return ones * 0.0, ones
    count = observed.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean_abs = (values.abs() * observed).sum(dim=1, keepdim=True) / count
    if mode == "mean":
        return torch.zeros_like(mean_abs), mean_abs.clamp_min(1e-6)
    mean = (values * observed).sum(dim=1, keepdim=True) / count
    var = ((values - mean) ** 2 * observed).sum(dim=1, keepdim=True) / count
    # A flat window has no spread: fall back to a small fraction of its level.
    return mean, (var.sqrt() + 1e-3 * mean_abs).clamp_min(1e-6)


class Ensemble(nn.Module):
    """Members trained with different seeds (and lookbacks); the forecast is their element-wise
    median. Inputs are as long as the longest member lookback; each member reads its own tail."""

    def __init__(self, members: list[Forecaster]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.horizon = members[0].horizon

    @classmethod
    def from_weights(cls, config: Config, weights: list[dict]) -> Ensemble:
        """The ensemble a run saved: member k (1-based) reads config.member_lookback(k) steps."""
        members = [Forecaster(config.model, config.data.horizon, config.member_lookback(k))
                   for k in range(1, len(weights) + 1)]
        for member, state in zip(members, weights):
            member.load_state_dict(state)
        return cls(members)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](inputs)
        forecasts = torch.stack([member(inputs).float() for member in self.members])
        return forecasts.quantile(0.5, dim=0)                 # (batch, horizon)


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
