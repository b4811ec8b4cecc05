"""The caption embedding cache (`<split>_text_embeddings.pt`, the seed notebook's file): every unique caption
once with its fp16, L2-normalized embedding, plus each image's id, file name and caption list.

`shardgen build` writes it (`shardgen.text.cache`); rebuilds and the map-style `COCOClipDataset` read it here.
It is read with `torch.load(weights_only=True)`: tensors, lists and strings only, never arbitrary objects. With
`mmap=True` the embeddings tensor stays in the file (memory-mapped, read-only pages of the page cache), so
DataLoader workers forked from the reader share one copy instead of holding one each; any cache `torch.save` wrote
in its zip format (every version so far) maps.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

CACHE_VERSION = 1


def embeddings_cache_path(folder: str | Path, split: str) -> Path:
    """Where the cache for `split` lies in `folder` (`shardgen build` writes it next to the shards by default)."""
    return Path(folder) / f"{split}_text_embeddings.pt"


def load_embeddings_cache(path: str | Path, *, mmap: bool = False) -> dict | None:
    """The cache at `path` as a dict, or None when it is missing, unreadable or of another version (it is only a
    cache: the caller recomputes). `mmap`: map the tensors from the file instead of reading them into memory."""
    import torch  # lazily: the rest of the format layer needs no torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile):
        return None  # truncated, garbage, or objects that weights_only refuses
    return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
