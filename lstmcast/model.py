"""The forecaster: a stacked LSTM encoder over the lookback window and a direct multi-horizon head."""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import nn

from .cells import encoder_output_size, make_encoder
from .config import Config, ModelConfig
from .errors import LstmcastError
from .quantiles import keep_monotone, widen
from .runtime import Runtime, autocast_of
from .windows import N_FEATURES


class Forecaster(nn.Module):
    """(batch, lookback, features) -> (batch, horizon), all horizon steps at once; with quantile
    levels (model.quantiles) -> (batch, horizon, Q), levels ascending, the median among them.

    The encoder comes from cells.make_encoder: torch.nn.LSTM for the default cell (the fused
    cuDNN kernel on CUDA), nn.GRU for gru, the fused custom loops for peephole and cifg; optionally
    bidirectional. The head reads the encoder's final state (both directions' when bidirectional)
    and, with model.attention, also an attention-weighted sum of every encoder state.

    With `n_known` features known in advance (future covariates, calendar) the linear head is
    replaced by a per-step decoder (StepDecoder) that also reads each step's features. With
    model.series_embedding and `n_series` training series, a learned vector per series joins the
    summary; a series not seen in training (code -1) gets the mean of the learned vectors.
    """

    def __init__(self, config: ModelConfig, horizon: int, lookback: int,
                 input_size: int = N_FEATURES, n_known: int = 0, n_series: int = 0):
        super().__init__()
        self.horizon = horizon
        self.tbptt = 0  # train.tbptt: > 0, a stateful model (tbptt.py), set by who builds it from a Config
        self.lookback = lookback  # reads the last `lookback` steps of longer inputs (ensembles)
        self.window_norm = config.window_norm
        self.encoder = make_encoder(config.cell, input_size, config.hidden_size, config.layers,
                                    config.dropout, config.bidirectional)  # forget-gate bias 1
        self.bidirectional = config.bidirectional
        width = encoder_output_size(config.hidden_size, config.bidirectional)
        self.attention = Attention(width) if config.attention else None
        summary = 2 * width if config.attention else width
        embedding = config.series_embedding if n_series else 0
        summary += embedding
        self.dropout = nn.Dropout(config.dropout)
        # Exactly the modules (and creation order) of a model without covariates when n_known is 0.
        self.head = nn.Linear(summary, horizon) if not n_known else None
        self.n_known = n_known
        self.levels = config.levels      # None: point forecasts (no further parameters)
        if self.levels is not None:
            self.median_index = self.levels.index(0.5)
            # Gaps between neighbouring levels, outward from the median: (horizon, Q - 1) per window.
            self.spread = nn.Linear(summary, horizon * (len(self.levels) - 1))
            init_spread(self.spread, self.levels)
        self.decoder = StepDecoder(summary, n_known, horizon, config.hidden_size) if n_known else None
        self.embedding = nn.Embedding(n_series, embedding) if embedding else None
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, std=0.1)  # the size of the summary's entries
        self.attention_weights: torch.Tensor | None = None  # (batch, lookback) of the last call
        # An autoregressive skip around the recurrence (LSTNet's "highway"): a linear map of the
        # window's own normalised values, starting at zero so an untrained model is still naive.
        self.skip = nn.Linear(lookback, horizon) if config.linear_skip else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)

    def normalized(self, inputs: torch.Tensor, future: torch.Tensor | None = None,
                   series: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forecast in window-normalised units: (prediction, loc, scale), the last two (batch, 1);
        prediction (batch, horizon), or (batch, horizon, Q) with quantile levels.

        `future` (batch, horizon, n_known): the known features of each forecast step; `series`
        (batch,) int64: each window's embedding row (-1 or None: the mean embedding).

        Training computes its loss here, on (target - loc) / scale, so that every window weighs
        the same whatever the level of its series.
        """
        inputs = inputs[:, -self.lookback:]
        loc, scale = window_stats(inputs, self.window_norm)
        if self.window_norm != "none":
            observed = inputs[..., 1]
            values = (inputs[..., 0] - loc) / scale * observed  # padding stays 0
            inputs = torch.cat([values[..., None], observed[..., None], inputs[..., 2:]], dim=-1)
        states, _ = self.encoder(inputs)                       # (batch, lookback, width)
        last = self.summary(states, inputs[..., 1])            # (batch, summary)
        return self.decode(last, inputs[..., 0], future, series), loc, scale

    def decode(self, last: torch.Tensor, values: torch.Tensor, future: torch.Tensor | None = None,
               series: torch.Tensor | None = None) -> torch.Tensor:
        """The head: encoder summary (batch, width) and the input values (batch, lookback), of which
        only the last is read without model.linear_skip -> (batch, horizon) or (batch, horizon, Q).
        A stateful pass (tbptt.py) calls it with the state at each forecast origin."""
        if self.embedding is not None:
            last = torch.cat([last, self.embed(series, len(last)).to(last.dtype)], dim=-1)
        last = self.dropout(last)
        # The head learns a correction to the naive forecast (the last observed value): an
        # untrained model already forecasts like naive, which keeps ratio losses (sMAPE) out of
        # the flat region where a forecast near 0 sits against a target near 1.
        correction = self.head(last) if self.decoder is None else self.decoder(last, future)
        if self.skip is not None:
            correction = correction + self.skip(values.to(correction.dtype))
        median = correction + values[:, -1:]                  # (batch, horizon)
        if self.levels is None:
            return median
        return self.quantiles(median, last)                    # (batch, horizon, Q)

    def embed(self, series: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(batch,) embedding rows -> (batch, series_embedding); unseen (-1) or None: the mean row."""
        weight = self.embedding.weight
        mean = weight.mean(dim=0, keepdim=True)
        if series is None:
            return mean.expand(batch, -1)
        return torch.where((series >= 0)[:, None], weight[series.clamp_min(0)], mean)

    def summary(self, states: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """What the head reads: (batch, lookback, width) -> (batch, width or 2 x width)."""
        if self.bidirectional:
            # Each direction's final state: forward at the last step, backward at the first.
            half = states.shape[-1] // 2
            final = torch.cat([states[:, -1, :half], states[:, 0, half:]], dim=-1)
        else:
            final = states[:, -1]
        if self.attention is None:
            return final
        context, self.attention_weights = self.attention(final, states, observed)
        return torch.cat([final, context], dim=-1)

    def quantiles(self, median: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Non-crossing by construction: the other levels are the median minus (below) or plus
        (above) cumulative sums of positive gaps. (batch, horizon), (batch, hidden) -> (batch, horizon, Q)."""
        gaps = F.softplus(self.spread(last).float()).view(len(last), self.horizon, -1)  # > 0
        median, m = median.float()[..., None], self.median_index
        below = median - gaps[..., :m].cumsum(dim=-1)          # levels m-1, m-2, ..., 0
        above = median + gaps[..., m:].cumsum(dim=-1)          # levels m+1, ..., Q-1
        return torch.cat([below.flip(-1), median, above], dim=-1)

    def forward(self, inputs: torch.Tensor, future: torch.Tensor | None = None,
                series: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, lookback, features) -> (batch, horizon) or (batch, horizon, Q) in the inputs' units."""
        prediction, loc, scale = self.normalized(inputs, future, series)
        if prediction.dim() == 3:
            loc, scale = loc[..., None], scale[..., None]      # (batch, 1, 1)
        return prediction.float() * scale + loc


class StepDecoder(nn.Module):
    """Per-step head: correction_k = MLP([summary, known features of step k, one-hot k]), the
    same MLP for every step, so step k reads only its own future features."""

    def __init__(self, summary: int, n_known: int, horizon: int, hidden: int):
        super().__init__()
        self.horizon = horizon
        self.mlp = nn.Sequential(nn.Linear(summary + n_known + horizon, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("steps", torch.eye(horizon), persistent=False)
        # The last layer starts at 0: an untrained model forecasts naive, as the linear head nearly does.
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, summary: torch.Tensor, future: torch.Tensor | None) -> torch.Tensor:
        """(batch, summary), (batch, horizon, n_known) -> (batch, horizon)."""
        if future is None:
            raise ValueError("this model reads known future features: pass `future`")
        batch = len(summary)
        x = torch.cat([summary[:, None, :].expand(batch, self.horizon, -1), future.to(summary.dtype),
                       self.steps.to(summary.dtype).expand(batch, -1, -1)], dim=-1)
        return self.mlp(x)[..., 0]


class Attention(nn.Module):
    """Scaled dot-product attention of the final state over every encoder state (Luong et al.
    2015, "general" score), padding masked: the head sees the whole window, not only its end."""

    def __init__(self, width: int):
        super().__init__()
        self.query = nn.Linear(width, width, bias=False)

    def forward(self, final: torch.Tensor, states: torch.Tensor, observed: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, width), (batch, lookback, width), (batch, lookback) -> context (batch, width),
        weights (batch, lookback) summing to 1 over the observed steps."""
        query = self.query(final)[:, :, None]                                  # (batch, width, 1)
        scores = torch.bmm(states, query)[..., 0] / math.sqrt(states.shape[-1])  # (batch, lookback)
        scores = scores.float().masked_fill(observed <= 0, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # an all-padding window: zeros
        context = torch.bmm(weights[:, None, :].to(states.dtype), states)[:, 0]  # (batch, width)
        return context, weights


def init_spread(spread: nn.Linear, levels: tuple[float, ...]) -> None:
    """Start the gaps between levels at those of a standard normal (0.1 to 0.5: 1.28), so an
    untrained model's intervals are already of a sensible width in window-normalised units."""
    z = [NormalDist().inv_cdf(q) for q in levels]
    m = levels.index(0.5)
    gaps = [z[k + 1] - z[k] for k in reversed(range(m))] + [z[k] - z[k - 1] for k in range(m + 1, len(z))]
    inverse_softplus = [math.log(math.expm1(g)) for g in gaps]   # (Q - 1,), order as in quantiles()
    with torch.no_grad():
        spread.bias.copy_(torch.tensor(inverse_softplus).repeat(spread.out_features // len(gaps)))


_UNITS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _unit(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(0, 1) as float32 (1, 1) tensors on `device`, made once per device and shared: callers get
    expanded views and must not write to them (no caller does: loc and scale are only read; an
    in-place write is refused for a batch over 1, but would reach the shared tensor for a batch of 1)."""
    if device not in _UNITS:
        _UNITS[device] = (torch.zeros(1, 1, device=device), torch.ones(1, 1, device=device))
    return _UNITS[device]


def window_stats(inputs: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window (loc, scale), each (batch, 1), from the observed input values only.

    none: (0, 1). standard: mean and standard deviation. mean: (0, mean |x|), a pure rescaling
    for positive data (sales, counts), which keeps ratios such as sMAPE unchanged.
    """
    if mode == "none":  # constants broadcast to the batch: no kernel launched per step
        zero, one = _unit(inputs.device)
        return zero.expand(inputs.shape[0], 1), one.expand(inputs.shape[0], 1)
    values, observed = inputs[..., 0].float(), inputs[..., 1].float()
    count = observed.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean_abs = (values.abs() * observed).sum(dim=1, keepdim=True) / count
    if mode == "mean":
        return torch.zeros_like(mean_abs), mean_abs.clamp_min(1e-6)
    mean = (values * observed).sum(dim=1, keepdim=True) / count
    var = ((values - mean) ** 2 * observed).sum(dim=1, keepdim=True) / count
    # A flat window has no spread: fall back to a small fraction of its level.
    return mean, (var.sqrt() + 1e-3 * mean_abs).clamp_min(1e-6)


class Ensemble(nn.Module):
    """Members trained with different seeds (and lookbacks, losses, ...); the forecast is their element-wise
    median (of each quantile level, then put in order again). Inputs are as long as the longest
    member lookback; each member reads its own tail.

    With `conformal` (the run's calibration: {"pairs": [[lo, hi], ...], "corrections": [[c per
    step], ...]}) every pair is widened by c times the window's scale (`conformal_scale`).
    """

    def __init__(self, members: list[Forecaster], conformal: dict | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.horizon = members[0].horizon
        self.levels = members[0].levels
        self.median_index = members[0].median_index if self.levels is not None else None
        self.window_norm = members[0].window_norm
        self.tbptt = members[0].tbptt
        self.pairs: list[tuple[int, int]] = []
        corrections = None
        if conformal is not None:
            self.pairs = [(self.levels.index(lo), self.levels.index(hi)) for lo, hi in conformal["pairs"]]
            corrections = torch.tensor(conformal["corrections"], dtype=torch.float32)   # (pairs, horizon)
        self.register_buffer("corrections", corrections, persistent=False)

    @classmethod
    def from_weights(cls, config: Config, weights: list[dict], conformal: dict | None = None,
                     dims: dict | None = None) -> Ensemble:
        """The ensemble a run saved: member k (1-based) is built from config.member(k) (its own
        lookback and model keys). `dims`: input_size, n_known, n_series (FeatureSpec.dims; None: none)."""
        owns = [config.member(k) for k in range(1, len(weights) + 1)]
        members = [Forecaster(own.model, config.data.horizon, own.data.resolved_lookback, **(dims or {}))
                   for own in owns]
        for k, (member, state) in enumerate(zip(members, weights), start=1):
            problem = weights_mismatch(member, state)
            if problem is not None:
                who = f"member {k}: " if len(weights) > 1 else ""
                raise LstmcastError(f"does not match its config ({who}{problem})")
            member.load_state_dict(state)
            member.tbptt = config.train.tbptt
        return cls(members, conformal)

    def conformal_scale(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, 1): the scale conformal scores are measured in, that of model.window_norm over
        the whole input (the longest member lookback); 1 (per-series scaled units) with none."""
        return window_stats(inputs, self.window_norm)[1]

    def forward(self, inputs: torch.Tensor, future: torch.Tensor | None = None,
                series: torch.Tensor | None = None) -> torch.Tensor:
        # Members slice their own lookback from `inputs`; `future` is per forecast step, unsliced.
        if len(self.members) == 1:
            forecasts = self.members[0](inputs, future, series)
        else:
            forecasts = torch.stack([member(inputs, future, series).float() for member in self.members])
            forecasts = forecasts.quantile(0.5, dim=0)        # (batch, horizon[, Q])
            if self.levels is not None:
                forecasts = keep_monotone(forecasts, self.median_index)
        if self.corrections is not None:
            forecasts = widen(forecasts.float(), self.corrections, self.pairs, self.median_index,
                              self.conformal_scale(inputs))
        return forecasts


def weights_mismatch(model: nn.Module, state) -> str | None:
    """What keeps `state` (a saved state dict) from loading into `model`, in words; None if it fits:
    weights another config made, or a cut-down dict, are told apart from a bug."""
    if not isinstance(state, dict):
        return f"the weights are a {type(state).__name__}, not a dict of tensors"
    wanted = model.state_dict()
    problems = []
    missing = [key for key in wanted if key not in state]
    unexpected = [key for key in state if key not in wanted]
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" and {len(keys) - 2} more" if len(keys) > 2 else ""
            problems.append(f"{label} {', '.join(map(str, keys[:2]))}{more}")
    for key, tensor in wanted.items():
        saved = state.get(key)
        if key in state and not isinstance(saved, torch.Tensor):
            problems.append(f"{key} is a {type(saved).__name__}, not a tensor")
        elif key in state and saved.shape != tensor.shape:
            problems.append(f"shape of {key} is {tuple(saved.shape)}, the config needs {tuple(tensor.shape)}")
    if not problems:
        return None
    more = f"; and {len(problems) - 3} more differences" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def forecast_windows(model: nn.Module, inputs_of, starts: torch.Tensor,
                     runtime: Runtime | None, batch_size: int = 4096, fixed: bool = False) -> torch.Tensor:
    """Scaled forecasts (n, horizon), or (n, horizon, Q), in fp32 for windows `starts`, in batches,
    in eval mode, under `runtime`'s autocast (None: plain fp32).

    `fixed`: every batch is `batch_size` windows (the last one padded with copies of its first),
    so that a window's forecast is the same bits whichever windows go with it: matrix kernels
    round rows differently by the batch's size (rows past a multiple of 4 take another path).

    `inputs_of(starts)` builds the model's arguments: (batch, lookback, features) inputs
    (SeriesBuffer.inputs), or a tuple (inputs, future, series) (SeriesBuffer.model_inputs).
    """
    autocast = autocast_of(runtime)
    was_training = model.training
    model.eval()
    out = []
    for chunk in torch.split(starts, batch_size):
        real = len(chunk)
        if fixed and real < batch_size:
            chunk = torch.cat([chunk, chunk[:1].expand(batch_size - real)])
        with torch.autocast(runtime.device.type if runtime is not None else chunk.device.type,
                            dtype=autocast or torch.float32,
                            enabled=autocast is not None):
            args = inputs_of(chunk)
            out.append(model(*(args if isinstance(args, tuple) else (args,))).float()[:real])
    model.train(was_training)
    if not out:
        levels = getattr(model, "levels", None)
        return torch.zeros(0, getattr(model, "horizon", 0), *([len(levels)] if levels else []))
    return torch.cat(out)
