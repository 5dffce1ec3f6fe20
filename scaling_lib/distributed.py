"""Data-parallel training: the ranks that torchrun starts, and what they share.

Under `torchrun --nproc-per-node K`, every process trains the same run on its share of each step's
batch (DistributedDataParallel: gloo on a CPU, NCCL on CUDA). The config's `batch_size` stays the
global batch, the sum over ranks, so a run's key, and what one step trains on, do not depend on K.
Rank 0 alone evaluates, checkpoints and writes; the others follow its decisions. Without torchrun's
environment (WORLD_SIZE unset or 1) every helper here is a no-op, and training is what it was.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

# Rank 0 evaluates alone (the final evaluation reads the whole validation and test splits) while the
# others wait in a collective: a longer wait than torch's default of 10 to 30 minutes.
TIMEOUT_S = float(os.environ.get("SCALING_LIB_DIST_TIMEOUT_S", 3 * 3600))


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world(device_type: str = "cpu") -> World:
    """The ranks of this run, from torchrun's environment; joins the process group on first use."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_S))
    return World(dist.get_rank(), dist.get_world_size(), local_rank, str(dist.get_backend()))


def per_rank_batch(batch_size: int, w: World) -> int:
    """Each rank's share of the global batch; the ranks must split it evenly (else the mean of their
    gradients is not the gradient of the global batch)."""
    if batch_size % w.size:
        raise ValueError(f"batch_size {batch_size} (the global batch) does not split evenly over {w.size} ranks")
    return batch_size // w.size


def broadcast(w: World, obj: Any) -> Any:
    """Rank 0's value of obj, on every rank."""
    if not w.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(w: World, obj: Any) -> list[Any]:
    """Every rank's obj, in rank order, on every rank."""
    if not w.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def mean(w: World, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the ranks (each rank's loss over its share: the global batch's mean)."""
    if not w.distributed:
        return value
    import torch.distributed as dist

    v = value.detach().clone().reshape(1).float()
    dist.all_reduce(v)
    return v[0] / w.size


def any_rank(w: World, *flags: bool) -> tuple[bool, ...]:
    """Each flag, true if it is true on any rank: the ranks take every decision together."""
    if not w.distributed:
        return tuple(bool(f) for f in flags)
    import torch.distributed as dist

    t = torch.tensor([float(f) for f in flags], device=_collective_device(w))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(x) for x in t.tolist())


def _collective_device(w: World) -> torch.device:
    return torch.device("cuda", w.local_rank) if w.backend == "nccl" else torch.device("cpu")
