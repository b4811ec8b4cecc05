"""Recall@K for image↔text retrieval with the COCO protocol (all captions), as CLIP_benchmark defines it.

text→image: for each caption, a hit if its image is among the K most similar images; averaged over captions.
image→text: for each image, a hit if any of its captions is among the K most similar captions; averaged over images.
Similarities are computed in chunks, so 25k captions × 5k images never need more memory than one chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def recall_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                ks: Sequence[int] = (1, 5, 10), *, chunk: int = 1024) -> dict[str, float]:
    """image_emb `[N, D]`, text_emb `[M, D]` (L2-normalized), text_to_image `[M]` (image index of each caption)."""
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    text_to_image = text_to_image.to(image_emb.device)
    k_img, k_txt = min(max(ks), n_images), min(max(ks), n_texts)
    t2i_hits = {k: 0 for k in ks}
    for start in range(0, n_texts, chunk):
        sims = text_emb[start:start + chunk] @ image_emb.T  # [c, N]
        top = sims.topk(k_img, dim=1).indices  # [c, k]
        correct = top == text_to_image[start:start + chunk, None]  # [c, k]
        for k in ks:
            t2i_hits[k] += int(correct[:, :k].any(dim=1).sum())
    i2t_hits = {k: 0 for k in ks}
    for start in range(0, n_images, chunk):
        sims = image_emb[start:start + chunk] @ text_emb.T  # [c, M]
        top = sims.topk(k_txt, dim=1).indices  # [c, k]
        owners = torch.arange(start, start + sims.shape[0], device=image_emb.device)
        correct = text_to_image[top] == owners[:, None]  # [c, k]: is that caption one of this image's?
        for k in ks:
            i2t_hits[k] += int(correct[:, :k].any(dim=1).sum())
    out = {f"text_to_image_R@{k}": t2i_hits[k] / n_texts for k in ks}
    out |= {f"image_to_text_R@{k}": i2t_hits[k] / n_images for k in ks}
    return out
