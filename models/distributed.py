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


def mps_available() -> bool:
    """Whether Apple's Metal GPU (MPS) can be used. Guarded: a torch build without the MPS backend says no. The MPS
    path is untested here (no Apple machine in CI); it runs what the CPU path runs, in fp32."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def auto_device() -> str:
    """`--device auto`: CUDA, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if mps_available() else "cpu"


def setup_distributed(device: str) -> DistEnv:
    """Initialize DDP when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = auto_device() if device == "auto" else device
    cuda = torch.cuda.is_available() and device == "cuda"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return DistEnv(rank, world, torch.device("cuda", local))
    return DistEnv(rank, world, torch.device(device))


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
