"""Recall@K for image↔text retrieval with the COCO protocol (all captions), as CLIP_benchmark defines it, and the
literature's 5k / 1k-fold protocols on top of it.

text→image: for each caption, a hit if its image is among the K most similar images; averaged over captions.
image→text: for each image, a hit if any of its captions is among the K most similar captions; averaged over images.

Both directions come from one pass over the similarity matrix in row chunks of images (`[c, M]`, at most
`max_elements` scores at a time), so COCO val2014 (40,504 images × 202,654 captions, a 33 GB matrix in fp32) needs
one chunk's memory. Ranks are counted, not sorted: a query's rank is the number of wrong candidates that score at
least as high as its best right one. Ties therefore count against the query (a wrong candidate scoring the same as
the right one ranks above it, never a lucky draw of `topk`), and scores within `TIE_TOLERANCE` count as ties, so a
chunk size or a matmul kernel that rounds one score differently cannot change a result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TIE_TOLERANCE = 1e-6
MAX_ELEMENTS = 1 << 24  # scores per chunk: 64 MB in fp32, plus a few masks of the same shape


@torch.no_grad()
def retrieval_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor, *,
                    chunk: int | None = None, max_elements: int = MAX_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(image→text ranks `[N]`, text→image ranks `[M]`), 0 = retrieved first. image_emb `[N, D]`, text_emb `[M, D]`
    (L2-normalized), text_to_image `[M]` (the image index of each caption). `chunk` images per step (default: as
    many as keep one chunk's scores within `max_elements`)."""
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    device = image_emb.device
    owner = text_to_image.to(device)
    chunk = chunk or max(1, max_elements // max(1, n_texts))
    step = max(1, max_elements // max(1, text_emb.shape[1]))  # each caption's score with its own image, [M]
    positive = torch.cat([(image_emb[owner[s:s + step]] * text_emb[s:s + step]).sum(-1)
                          for s in range(0, n_texts, step)]) if n_texts else text_emb.new_zeros(0)
    t2i_rank = torch.zeros(n_texts, dtype=torch.long, device=device)
    i2t_rank = torch.empty(n_images, dtype=torch.long, device=device)
    for start in range(0, n_images, chunk):
        stop = min(start + chunk, n_images)
        sims = image_emb[start:stop] @ text_emb.T  # [c, M]
        caps = ((owner >= start) & (owner < stop)).nonzero().squeeze(1)  # [m] captions of this chunk's images
        rows = owner[caps] - start  # [m]
        own = sims[rows, caps]  # [m] their scores with their own image, as the comparisons below see them
        # text→image: images scoring at least as high as the caption's own, less the own image itself
        t2i_rank += (sims >= positive[None, :] - TIE_TOLERANCE).sum(0)
        t2i_rank[caps] -= (own >= positive[caps] - TIE_TOLERANCE).long()
        # image→text: captions scoring at least as high as the image's best own caption, less its own captions
        best = torch.full((stop - start,), float("-inf"), device=device).scatter_reduce(0, rows, own, "amax")
        above = (sims >= best[:, None] - TIE_TOLERANCE).sum(1)  # [c]
        own_above = torch.zeros_like(above).scatter_add(0, rows, (own >= best[rows] - TIE_TOLERANCE).long())
        i2t_rank[start:stop] = above - own_above
    return i2t_rank, t2i_rank


def recall_from_ranks(i2t_rank: torch.Tensor, t2i_rank: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
                      ) -> dict[str, float]:
    out = {f"text_to_image_R@{k}": float((t2i_rank < k).double().mean()) for k in ks}
    out |= {f"image_to_text_R@{k}": float((i2t_rank < k).double().mean()) for k in ks}
    return out


@torch.no_grad()
def recall_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                ks: Sequence[int] = (1, 5, 10), *, chunk: int | None = None,
                max_elements: int = MAX_ELEMENTS) -> dict[str, float]:
    """Recall@K both ways over the whole set. image_emb `[N, D]`, text_emb `[M, D]` (L2-normalized), text_to_image
    `[M]` (image index of each caption)."""
    ranks = retrieval_ranks(image_emb, text_emb, text_to_image, chunk=chunk, max_elements=max_elements)
    return recall_from_ranks(*ranks, ks)


@torch.no_grad()
def recall_at_k_folds(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor, *,
                      n_images: int, n_folds: int, ks: Sequence[int] = (1, 5, 10), chunk: int | None = None,
                      max_elements: int = MAX_ELEMENTS) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(mean, per fold) Recall@K over the first `n_images` images split in order into `n_folds` equal folds, each
    fold ranked on its own images and their captions: COCO's 5k protocol is (5000, 1), its 1k protocol (5000, 5)."""
    if n_images % n_folds or n_images > image_emb.shape[0]:
        raise ValueError(f"{n_images} images in {n_folds} folds: need a multiple of the fold count and at most the "
                         f"{image_emb.shape[0]} images at hand")
    size = n_images // n_folds
    owner = text_to_image.to(image_emb.device)
    folds = []
    for f in range(n_folds):
        lo, hi = f * size, (f + 1) * size
        mine = (owner >= lo) & (owner < hi)  # [M]: the fold's captions
        folds.append(recall_at_k(image_emb[lo:hi], text_emb[mine], owner[mine] - lo, ks, chunk=chunk,
                                 max_elements=max_elements))
    mean = {key: sum(fold[key] for fold in folds) / n_folds for key in folds[0]}
    return mean, folds
