"""Learning-rate schedule: linear warmup, then cosine decay to `min_ratio` of the base rate."""

from __future__ import annotations

import math

import torch


def clipped_warmup(warmup_steps: int, total_steps: int) -> int:
    """Warmup steps for a run of `total_steps`: at most a tenth of the run (at least one step when asked for any),
    so a short run still spends most of its steps at a useful learning rate."""
    return min(warmup_steps, max(1, total_steps // 10))


def cosine_with_warmup(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                       min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
