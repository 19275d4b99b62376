"""Training losses, behind one interface: `Loss(prediction, target, inputs, scale)`.

Every loss is computed on the window-normalised scale (model.Forecaster.normalized): `prediction`
(batch, horizon) or, with quantiles, (batch, horizon, Q); `target` (batch, horizon) normalised the
same way; `inputs` the raw (batch, lookback, features) model inputs and `scale` (batch, 1) the
window's normalising scale, which only the losses scaled like MASE read. `make_loss` picks one for
train.loss (and model.quantiles).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .mase import window_scale
from .runtime import Runtime

seasonal_scale = window_scale  # the name the training code and its tests have used


class Loss:
    """A training loss: a scalar tensor from (prediction, target, inputs, scale)."""

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor,
                 scale: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def smape_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sMAPE / 100 (0..2). Scale-free, so with window_norm mean and data.scaling none it is the
    competition metric itself; with a shifting normalisation it is only a proxy."""
    return (2 * (prediction - target).abs() / (prediction.abs() + target.abs() + 1e-8)).mean()


class PointLoss(Loss):
    """A loss of the prediction and target alone (mse, mae, huber, smape)."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.fn = fn

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor,
                 scale: torch.Tensor) -> torch.Tensor:
        return self.fn(prediction, target)


class MaseLoss(Loss):
    """MASE: the absolute error divided by the window's in-sample seasonal-naive MAE, so every
    window weighs by how hard it is to beat seasonal naive on it (M4's scaling, per window)."""

    def __init__(self, season: int):
        self.season = season

    def denominator(self, inputs: torch.Tensor, scale: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(batch, 1): the seasonal scale in window-normalised units (prediction and target are
        window-normalised, so the raw-unit scale is divided by `scale` too).

        A window whose observed inputs are all zero has no scale at all (a series starting with
        zeros, a closed shop): its error is measured relative to its targets' mean absolute value
        (at least 1, the window's own unit), so one such window cannot outweigh a whole batch."""
        raw = window_scale(inputs, self.season)
        relative = target.abs().mean(dim=1, keepdim=True).clamp_min(1.0)
        return torch.where(raw > 1e-8, raw / scale, relative)

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor,
                 scale: torch.Tensor) -> torch.Tensor:
        return ((prediction - target).abs() / self.denominator(inputs, scale, target)).mean()


class PinballLoss(Loss):
    """The pinball (quantile) loss averaged over levels, steps and windows, on the window-normalised
    scale. With `mase` each window's loss is divided by its seasonal scale, as MaseLoss does."""

    def __init__(self, levels: tuple[float, ...], mase: MaseLoss | None = None):
        self.levels = torch.tensor(levels)     # (Q,)
        self.mase = mase

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor,
                 scale: torch.Tensor) -> torch.Tensor:
        if self.levels.device != prediction.device:  # once: no host-to-device copy per step
            self.levels = self.levels.to(prediction.device)
        error = target[..., None] - prediction                    # (batch, horizon, Q)
        loss = torch.maximum(self.levels * error, (self.levels - 1.0) * error)
        if self.mase is not None:
            loss = loss / self.mase.denominator(inputs, scale, target)[..., None]
        return loss.mean()


# train.loss's values are declared with the key (keys.LOSSES): each is one of these, or mase
# (tests/test_config_source.py checks that the two agree).
POINT_LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss, "smape": smape_loss}
LOSSES = POINT_LOSSES  # the earlier name


def make_loss(name: str, season: int, levels: tuple[float, ...] | None = None) -> Loss:
    """The loss for train.loss (MASE needs the data's season length). With quantile levels it is
    the pinball loss, scaled per window like MASE when train.loss is mase."""
    if levels is not None:
        return PinballLoss(levels, MaseLoss(season) if name == "mase" else None)
    return MaseLoss(season) if name == "mase" else PointLoss(POINT_LOSSES[name])


def window_loss(model, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: Loss, runtime: Runtime,
                future: torch.Tensor | None = None, series: torch.Tensor | None = None) -> torch.Tensor:
    """The loss on the window-normalised scale: every window weighs the same, whatever its level."""
    with runtime.autocast_context():
        prediction, loc, scale = model.normalized(inputs, future, series)
    if getattr(model, "window_norm", None) != "none":  # none: loc 0, scale 1, (targets - 0) / 1 == targets
        targets = (targets - loc) / scale
    return loss_fn(prediction.float(), targets, inputs, scale)
