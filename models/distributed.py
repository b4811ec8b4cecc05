"""Distributed set-up for `models.train`: one process per GPU under `torchrun` (DDP), or a single process.

`torchrun` sets WORLD_SIZE / RANK / LOCAL_RANK; without it (or with WORLD_SIZE=1) nothing is initialized.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist


class DistEnv(NamedTuple):
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and prints."""
        return self.rank == 0


def setup_distributed(device: str) -> DistEnv:
    """Initialize DDP when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return DistEnv(rank, world, torch.device("cuda", local))
    return DistEnv(rank, world, torch.device("cpu" if device == "auto" else device))


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
