"""Data-parallel training across processes started by ``torchrun``.

Each process trains on its own batch of ``data.batch_size`` images; after every backward pass the
gradients of the networks about to be stepped are averaged across processes. Because every loss is a
batch mean, that equals one step on the concatenation of all processes' batches. Only rank 0 writes
logs, samples and checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


# How long the other ranks wait for rank 0's slow work (periodic evaluation) before giving up. The
# default process group's timeout (10-30 min) would otherwise end the job during a long evaluation.
SLOW_WORK_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    wait_group: Any = field(default=None, compare=False, repr=False)  # gloo group with SLOW_WORK_TIMEOUT

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_from_env() -> World:
    """Join the process group described by torchrun's environment; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    wait_group = dist.new_group(backend="gloo", timeout=SLOW_WORK_TIMEOUT)
    return World(rank=rank, world_size=world_size, local_rank=local_rank, wait_group=wait_group)


def device_for(world: World, requested: str) -> str:
    """With several processes on CUDA, each uses the GPU of its local rank."""
    if world.is_distributed and requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return requested


def broadcast(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the run directory it chose)."""
    if not world.is_distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_gradients(modules: list[nn.Module], world_size: int) -> None:
    """Average the gradients of ``modules`` over all processes, in one flat all-reduce."""
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def wait_for_main(world: World) -> None:
    """All ranks meet after rank 0's slow work (an evaluation), on a CPU group whose timeout is
    SLOW_WORK_TIMEOUT, so that the next gradient all-reduce does not wait past the default timeout."""
    if world.is_distributed:
        dist.barrier(group=world.wait_group)


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when ``flag`` is true on any (a stop signal that reached one process)."""
    if not world.is_distributed:
        return flag
    box = torch.tensor([int(flag)])
    dist.all_reduce(box, op=dist.ReduceOp.MAX, group=world.wait_group)
    return bool(box.item())
