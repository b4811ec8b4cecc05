"""Distributed set-up for `models.train`: one process per GPU under `torchrun` (DDP), or a single process.

`torchrun` sets WORLD_SIZE / RANK / LOCAL_RANK; without it (or with WORLD_SIZE=1) nothing is initialized. With
several ranks, `StopVote` is how they agree to stop after the same step when one of them gets a stop signal (one
node preempted), and `group_lost` recognises a collective that failed because a rank is gone.
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


class StopVote:
    """Every rank's stop request (a signal number, 0 for none), agreed after each step: an all_reduce (MAX) of one
    integer on the CPU (the default group under gloo, a gloo group of its own beside NCCL, so the vote never waits
    for the GPU). Create it on every rank at the same point: making a group is itself collective."""

    def __init__(self, env: DistEnv) -> None:
        self.world = env.world
        self.group = dist.new_group(backend="gloo") if env.world > 1 and dist.get_backend() != "gloo" else None
        self.flag = torch.zeros(1, dtype=torch.int32)

    def agreed(self, requested: int) -> int:
        """The signal every rank stops for now (0: go on): the largest of the ranks' requests."""
        if self.world == 1:
            return requested
        self.flag.fill_(requested)
        dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(self.flag.item())


# How gloo and NCCL say that a peer is gone (gloo raises a bare RuntimeError); torch's own DistError is the rest
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def group_lost(exc: BaseException) -> bool:
    """Whether `exc`, raised in a run of several ranks, says that the process group broke (a rank died or lost its
    connection), as opposed to a bug."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _PEER_LOST)


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
