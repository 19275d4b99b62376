"""One ensemble member's training state (Fit): model, optimizer, schedule, shuffling RNG and the
best epoch so far, all of which last.pt saves so --resume continues exactly; and how a member
starts (new_fit) and how its optimizer is built."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from .config import Config
from .device import seed_everything
from .errors import LstmcastError
from .model import Forecaster


def _rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LinearDecay:
    """train.schedule linear: the learning rate falls linearly from its start to 0 over `total`
    optimizer steps (`batch` after each). `step(val_loss)` does nothing: the plateau schedule's."""

    def __init__(self, optimizer: torch.optim.Optimizer, total: int):
        self.optimizer, self.total, self.done = optimizer, max(int(total), 1), 0
        self.base = [group["lr"] for group in optimizer.param_groups]

    def batch(self) -> None:
        self.done += 1
        left = max(1.0 - self.done / self.total, 0.0)
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * left

    def step(self, val_loss: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {"total": self.total, "done": self.done, "base": list(self.base)}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.done, self.base = state["total"], state["done"], list(state["base"])


@dataclass
class Fit:
    """Everything one training run mutates, so it can be saved to and restored from last.pt."""

    model: Forecaster
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | LinearDecay
    generator: torch.Generator
    best_weights: dict
    best_val: float = math.inf
    best_epoch: int = 0
    best_lr: float = math.nan  # the learning rate the best epoch trained with (refit starts there)
    bad_epochs: int = 0
    epoch: int = 0  # last finished epoch

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError:  # one parameter group: written before biases stopped decaying
            raise LstmcastError("--resume: last.pt was written by an older lstmcast (other optimizer "
                                "parameter groups); start a new run (--overwrite)") from None
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], self.generator)
        self.best_val, self.best_epoch = state["best_val"], state["best_epoch"]
        self.bad_epochs, self.epoch = state["bad_epochs"], state["epoch"]
        self.best_weights = state["best_weights"]
        self.best_lr = state.get("best_lr", self.optimizer.param_groups[0]["lr"])

    def record(self, val_loss: float, epoch: int, trained_lr: float) -> bool:
        """After an epoch's validation: keep its weights if they are the best so far; whether so."""
        if val_loss < self.best_val:
            self.best_val, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_lr = trained_lr
            self.best_weights = copy.deepcopy(self.model.state_dict())
            return True
        self.bad_epochs += 1
        return False

    def resumable(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": _rng_state(self.generator),
                "epoch": self.epoch, "best_val": self.best_val, "best_weights": self.best_weights,
                "best_epoch": self.best_epoch, "best_lr": self.best_lr, "bad_epochs": self.bad_epochs}


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices only. Biases (the forget-gate bias set to 1
    among them), other vectors (peephole diagonals, norm gains) and embedding tables get none:
    decaying them pulls them to 0, which for the forget-gate bias undoes its initialisation."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            plain = parameter.ndim < 2 or id(parameter) in embeddings
            (no_decay if plain else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; on CUDA torch's fused kernel (one launch for all parameters instead of a few per
    tensor group: the small models here are launch-bound). The state dict is the same either way,
    so a run resumes on another device."""
    groups = parameter_groups(model, weight_decay)
    cuda = all(p.is_cuda for group in groups for p in group["params"])
    return torch.optim.AdamW(groups, lr=lr, fused=True if cuda else None)


def new_fit(config: Config, seed: int, device: torch.device, dims: dict, steps_per_epoch: int = 1) -> Fit:
    """A fresh member: `config` is that member's own (Config.member), `seed` its seed
    (Config.member_seed); the linear schedule decays over train.epochs x `steps_per_epoch`."""
    seed_everything(seed)
    model = Forecaster(config.model, config.data.horizon, config.data.resolved_lookback, **dims).to(device)
    model.tbptt = config.train.tbptt
    optimizer = make_optimizer(model, config.train.lr, config.train.weight_decay)
    if config.train.schedule == "linear":
        scheduler = LinearDecay(optimizer, config.train.epochs * steps_per_epoch)
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.train.lr_factor, patience=config.train.lr_patience)
    return Fit(model, optimizer, scheduler, torch.Generator().manual_seed(seed),
                copy.deepcopy(model.state_dict()))
