"""The caption embedding cache (`<split>_text_embeddings.pt`, the seed notebook's file): every unique caption
once with its fp16, L2-normalized embedding, plus each image's id, file name and caption list.

`shardgen build` writes it (`shardgen.embeddings`); rebuilds and the map-style `COCOClipDataset` read it here.
It is read with `torch.load(weights_only=True)`: tensors, lists and strings only, never arbitrary objects.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

CACHE_VERSION = 1


def embeddings_cache_path(folder: str | Path, split: str) -> Path:
    """Where the cache for `split` lies in `folder` (`shardgen build` writes it next to the shards by default)."""
    return Path(folder) / f"{split}_text_embeddings.pt"


def load_embeddings_cache(path: str | Path) -> dict | None:
    """The cache at `path` as a dict, or None when it is missing, unreadable or of another version (it is only a
    cache: the caller recomputes)."""
    import torch  # lazily: the rest of the format layer needs no torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile):
        return None  # truncated, garbage, or objects that weights_only refuses
    return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
