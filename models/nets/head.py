"""The projection head: the seed's 2-layer MLP with GELU mapping image features into the CLIP text space."""

from __future__ import annotations

import torch
from torch import nn

from shardgen.format.names import EMBED_DIM


class ProjectionHead(nn.Sequential):
    """Linear(in_dim → hidden_dim) → GELU → Linear(hidden_dim → out_dim); 2048→1024→512 has ~2.6 M parameters."""

    def __init__(self, in_dim: int = 2048, hidden_dim: int = 1024, out_dim: int = EMBED_DIM) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features)  # [B, out_dim]
