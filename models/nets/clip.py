"""The trainable CLIP-style model: image tower + projection head, L2-normalized, with a learnable temperature.

The text side is the frozen CLIP tower (`shardgen.text.encoder.TextEncoder`); training uses its embeddings precomputed in the
shards, so it is not part of this module (or of its checkpoints).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from shardgen.format.names import EMBED_DIM

from .head import ProjectionHead
from .image_encoder import ImageEncoder

MAX_LOGIT_SCALE = 100.0


class CLIPModel(nn.Module):
    """Image tower + projection head into the text tower's space, whose width `embed_dim` is the shards' (the
    manifest's `embed_dim`: 512 for ViT-B CLIP towers, 768 for ViT-L)."""

    def __init__(self, image_encoder: ImageEncoder, head: ProjectionHead | None = None, *,
                 embed_dim: int = EMBED_DIM, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.head = head if head is not None else ProjectionHead(in_dim=image_encoder.out_dim, out_dim=embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    @property
    def embed_dim(self) -> int:
        """The width of the embeddings it makes (the head's output)."""
        return self.head[-1].out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized image embeddings `[B, embed_dim]`."""
        return nn.functional.normalize(self.head(self.image_encoder(images)), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped to ≤ 100 as in CLIP."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)


def parameter_counts(module: nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen}
