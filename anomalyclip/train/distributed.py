"""Data-parallel training under ``torchrun``: process group, sharding and reductions.

Outside ``torchrun`` (no ``WORLD_SIZE`` in the environment, or 1) everything here is a
no-op, so the trainer has a single code path.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(requested_device: str | None = None) -> Dist:
    """Join the ``torchrun`` process group (gloo on CPU, nccl on GPUs) if there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    requested_device = None if requested_device == "auto" else requested_device
    cuda = torch.cuda.is_available() and (requested_device or "cuda").startswith("cuda")
    if world <= 1:
        device = torch.device(requested_device or ("cuda" if cuda else "cpu"))
        return Dist(0, 1, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    rank = dist.get_rank()
    log.info("process %d of %d on %s", rank, world, device)
    return Dist(rank, world, device)


def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's ``t`` in rank order, keeping gradients to each shard."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t), dim=0)


def all_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        t = t.clone()
        dist.all_reduce(t)
    return t


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
