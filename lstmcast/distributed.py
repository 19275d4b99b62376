"""Training one model on several processes, launched by torchrun (DDP without the wrapper).

torchrun sets WORLD_SIZE, RANK, LOCAL_RANK and MASTER_ADDR/MASTER_PORT in each process's
environment; with WORLD_SIZE unset or 1 nothing here communicates and training is the
single-process path, step for step. With more:

- one process group: gloo on the CPU, NCCL on CUDA (each rank on cuda:LOCAL_RANK), with a timeout
  so that no rank waits forever on a rank that died;
- every rank draws the same global batch from the same seeded generator and trains on its slice
  (`shard`); the gradients are summed weighted by each slice's share of the batch (`average`),
  which is the 1-process gradient of the whole batch, so every rank takes the same optimizer step;
- every decision read off a clock (the time budget) is rank 0's (`agree`, `past`); a user error
  on any rank before training reaches every rank (`together`), and rank 0 reports it;
- rank 0 alone writes the run directory and reports progress (`writes`).

An explicit all_reduce of the gradients rather than DistributedDataParallel: the model code stays
the same module, and the weighting keeps an uneven last batch exact.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import LstmcastError

# A collective that some rank does not reach in this long fails: a rank that died (killed, out of
# memory) ends the others instead of leaving them waiting. Long enough for a slow epoch's
# validation on rank 0 between two collectives.
TIMEOUT = timedelta(minutes=30)


def device_type(setting: str) -> str:
    """'cuda' or 'cpu': what train.device will resolve to, for the backend (NCCL or gloo), known
    before the process group starts and without touching a GPU."""
    cuda = setting.startswith("cuda") or (setting == "auto" and torch.cuda.is_available())
    return "cuda" if cuda else "cpu"


def check_config(config, ranks: Ranks) -> None:
    """What a distributed launch cannot train (refused alike on every rank, before any collective):
    the stateful recipe (train.tbptt), and a batch the ranks cannot split into equal slices."""
    if not ranks.active:
        return
    for member in range(1, config.train.ensemble + 1):
        own = config.member(member).train
        if own.tbptt:
            raise LstmcastError(f"train.tbptt {own.tbptt}: the stateful recipe trains in one process; run it "
                                f"without torchrun, or set train.tbptt=0")
        if own.batch_size % ranks.world:
            raise LstmcastError(f"train.batch_size {own.batch_size}: not divisible by the {ranks.world} ranks of "
                                f"this launch; use a multiple of {ranks.world} (each rank trains "
                                f"batch_size / {ranks.world} windows of every step)")


class SharedError(LstmcastError):
    """A user error every rank raises alike after `together`; rank 0 alone prints it."""


class Ranks:
    """This process's place in the launch: `rank` of `world` processes, `local_rank` on its machine."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.agreed = False   # whether the first `together` is behind us (see `fail`)

    @classmethod
    def from_env(cls, environ=os.environ) -> Ranks:
        """The launch torchrun describes in the environment; one process without it."""
        try:
            world = int(environ.get("WORLD_SIZE") or 1)
            if world <= 1:
                return cls()
            rank = int(environ["RANK"])
            return cls(rank, world, int(environ.get("LOCAL_RANK") or rank))
        except (KeyError, ValueError):
            raise LstmcastError(f"WORLD_SIZE={environ.get('WORLD_SIZE')!r} with RANK={environ.get('RANK')!r}, "
                                f"LOCAL_RANK={environ.get('LOCAL_RANK')!r}: not a launch lstmcast understands; "
                                f"start several processes with torchrun") from None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Whether this rank writes the run directory and reports (rank 0)."""
        return self.rank == 0

    # --- the process group --------------------------------------------------------------

    @contextmanager
    def group(self, device_type: str):
        """The process group for a distributed launch (nothing for one process): NCCL for CUDA,
        gloo otherwise. One the caller already started is used as it is."""
        if not self.active or dist.is_initialized():
            yield self
            return
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            if self.local_rank >= torch.cuda.device_count():
                raise LstmcastError(f"LOCAL_RANK {self.local_rank}: this machine has {torch.cuda.device_count()} "
                                    f"GPU(s); start at most that many processes per node, or use --device cpu")
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group(backend, rank=self.rank, world_size=self.world, timeout=TIMEOUT)
        try:
            yield self
        finally:
            dist.destroy_process_group()

    def device(self, resolved: torch.device, setting: str) -> torch.device:
        """The device this rank trains on: the CPU, or CUDA's cuda:LOCAL_RANK."""
        if not self.active or resolved.type == "cpu":
            return resolved
        if resolved.type != "cuda" or ":" in setting:
            raise LstmcastError(f"train.device {setting}: under torchrun use cpu or cuda (each rank takes "
                                f"cuda:LOCAL_RANK)")
        return torch.device("cuda", self.local_rank)

    # --- agreeing -----------------------------------------------------------------------

    @contextmanager
    def together(self):
        """A block every rank runs before training (reading, checks, the run directory): a user
        error on any rank is raised on every rank, so none waits in a collective for one that left."""
        if not self.active:
            yield
            return
        try:
            yield
        except LstmcastError as exc:
            self._share(str(exc))
            raise
        self._share(None)

    def fail(self, exc: LstmcastError) -> None:
        """A rank that failed before the first `together` (rank 0's lock) takes part in it."""
        if self.active and not self.agreed and not isinstance(exc, SharedError):
            self._share(str(exc))

    def _share(self, error: str | None) -> None:
        errors: list = [None] * self.world
        dist.all_gather_object(errors, error)
        self.agreed = True
        first = next(((r, e) for r, e in enumerate(errors) if e is not None), None)
        if first is not None:
            rank, message = first
            raise SharedError(message if rank == self.rank or rank == 0 else f"rank {rank}: {message}")

    def same(self, value: str, message: str) -> None:
        """A user error (`message`) on every rank unless every rank holds rank 0's `value`."""
        if not self.active:
            return
        values: list = [None] * self.world
        dist.all_gather_object(values, value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise SharedError(f"{message} (rank {differ[0]} differs from rank 0)")

    def agree(self, value):
        """Rank 0's `value` on every rank (any picklable: a clock-based decision, a selection)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def past(self, deadline: float) -> bool:
        """Whether rank 0's clock is past `deadline` (no deadline: no communication)."""
        if math.isinf(deadline) or not self.active:
            return time.perf_counter() > deadline
        flag = torch.tensor([time.perf_counter() > deadline], dtype=torch.uint8, device=self._comm_device())
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")

    # --- the batch ----------------------------------------------------------------------

    def shard(self, rows: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's slice of the global batch `rows` and its share of it. A rank whose slice is
        empty (a last batch smaller than the world) computes on one window with share 0, so every
        rank has the same gradients to sum."""
        if not self.active:
            return rows, 1.0
        mine = torch.tensor_split(rows, self.world)[self.rank]
        if len(mine) == 0:
            return rows[:1], 0.0
        return mine, len(mine) / len(rows)

    def average(self, model: torch.nn.Module, share: float) -> None:
        """Every rank's gradient, weighted by its share of the batch, summed on every rank: the
        gradient of the batch's mean loss. One all_reduce over a flat buffer."""
        if not self.active:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(share)
        dist.all_reduce(flat)
        for grad, part in zip(grads, torch.split(flat, [g.numel() for g in grads])):
            grad.copy_(part.view_as(grad))

    def running(self, total: torch.Tensor) -> torch.Tensor:
        """A progress report's running loss sum from rank 0's slice alone: scaled to the batch."""
        return total if not self.active else total * self.world

    def sum(self, total: torch.Tensor) -> torch.Tensor:
        """`total` summed over the ranks (the epoch's training loss)."""
        if self.active:
            total = total.clone()
            dist.all_reduce(total)
        return total

    def same_weights(self, model: torch.nn.Module) -> None:
        """Rank 0's weights on every rank (they start alike from the seed; this makes sure)."""
        if self.active:
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
