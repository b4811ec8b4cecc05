"""InfoNCE: the symmetric cross-entropy of CLIP (image→text and text→image), as in open_clip's `ClipLoss`."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate `x` from every rank; gradients flow through this rank's own part (open_clip's default:
    each rank back-propagates its own features, DDP averages). Returns (all, offset of this rank)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    rank = dist.get_rank()
    parts[rank] = x
    return torch.cat(parts), rank * x.shape[0]


def info_nce_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor, *,
                  gather: bool = True) -> torch.Tensor:
    """Mean of CE(image→text) and CE(text→image) over the (global) batch.

    image_emb, text_emb: `[B, D]`, L2-normalized; logit_scale: exp'd temperature (a scalar tensor).
    Under DDP each rank scores its images against every rank's texts and vice versa (open_clip's local loss).
    """
    if gather:
        all_text, offset = gather_with_grad(text_emb)
        all_image, _ = gather_with_grad(image_emb)
    else:
        all_text, all_image, offset = text_emb, image_emb, 0
    labels = torch.arange(image_emb.shape[0], device=image_emb.device) + offset  # [B]
    logits_per_image = logit_scale * image_emb @ all_text.T  # [B, B_global]
    logits_per_text = logit_scale * text_emb @ all_image.T  # [B, B_global]
    return (F.cross_entropy(logits_per_image.float(), labels) + F.cross_entropy(logits_per_text.float(), labels)) / 2
