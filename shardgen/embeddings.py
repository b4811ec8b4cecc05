"""Caption embeddings for a split, computed once and cached as `<split>_text_embeddings.pt` (the seed's file).

Captions are deduplicated by text; the cache stores each unique text once with its fp16, L2-normalized 512-d
embedding, plus every image's caption list, so the map-style `COCOClipDataset` and rebuilds reuse it. A rebuild
encodes only texts the cache lacks, and loads no model at all when nothing is missing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .coco import CocoImage
from .format.captions import CACHE_VERSION, load_embeddings_cache


@dataclass
class CaptionEmbeddings:
    text_encoder: str
    random_init: bool
    texts: list[str]  # unique captions
    embeddings: torch.Tensor  # [U, 512] float16, L2-normalized rows
    truncated: list[str]  # texts longer than 77 tokens (encoded from their first 77)

    def __post_init__(self) -> None:
        self._row = {t: i for i, t in enumerate(self.texts)}

    def rows_for(self, captions: tuple[str, ...] | list[str]) -> np.ndarray:
        """`[n, 512]` float16 for these captions, row i ↔ captions[i]."""
        idx = [self._row[c] for c in captions]
        return self.embeddings[idx].numpy()


def encoder_fingerprint(name: str) -> str:
    """Identify an encoder: for local dirs include config and weight sizes, so a replaced model invalidates the cache."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return name
    h = hashlib.sha256(name.encode())
    for f in sorted(path.iterdir()):
        if f.suffix in (".json", ".safetensors", ".bin", ".txt"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
            if f.name == "config.json":
                h.update(f.read_bytes())
    return f"{name}#{h.hexdigest()[:16]}"


def save_cache(path: Path, emb: CaptionEmbeddings, images: list[CocoImage], fingerprint: str) -> None:
    data = {
        "version": CACHE_VERSION,
        "text_encoder": emb.text_encoder,
        "fingerprint": fingerprint,
        "random_init": emb.random_init,
        "texts": emb.texts,
        "embeddings": emb.embeddings,
        "truncated": emb.truncated,
        "image_ids": torch.tensor([im.image_id for im in images], dtype=torch.long),
        "captions": [list(im.captions) for im in images],
        "file_names": [im.file_name for im in images],
    }
    # Per process, in a folder of its own: torch names the archive's records after the file, so the temporary file
    # keeps the name `<cache>.tmp` that makes the cache's bytes reproducible.
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.mkdir(exist_ok=True)
    tmp = staging / f"{path.name}.tmp"
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        staging.rmdir()


def encode_captions(images: list[CocoImage], *, text_encoder: str, cache: Path, device: str = "cpu",
                    batch_size: int = 256, progress: bool = False) -> tuple[CaptionEmbeddings, bool]:
    """Embeddings for every caption of `images`, from the cache where possible. Returns (embeddings, cache_dirty)."""
    texts = list(dict.fromkeys(c for im in images for c in im.captions))
    fingerprint = encoder_fingerprint(text_encoder)
    cached = load_embeddings_cache(cache)
    known: dict[str, torch.Tensor] = {}
    truncated: set[str] = set()
    random_init = False
    if cached is not None and cached.get("fingerprint") == fingerprint:
        random_init = bool(cached["random_init"])
        known = dict(zip(cached["texts"], cached["embeddings"]))
        truncated = set(cached["truncated"])
    missing = [t for t in texts if t not in known]
    if missing:
        from shardgen.text import TextEncoder

        encoder = TextEncoder(text_encoder, device=device)
        random_init = encoder.random_init
        ids, cut = encoder.tokenize(missing)
        truncated |= {missing[i] for i in cut}
        new = encoder.encode_ids(ids, batch_size=batch_size, progress=progress).to(torch.float16)
        known.update(zip(missing, new))
    stacked = torch.stack([known[t] for t in texts]) if texts else torch.empty(0, 512, dtype=torch.float16)
    emb = CaptionEmbeddings(text_encoder=text_encoder, random_init=random_init, texts=texts,
                            embeddings=stacked.to(torch.float16), truncated=sorted(t for t in truncated if t in known))
    return emb, bool(missing) or cached is None
