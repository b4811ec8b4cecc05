"""Random access to shards (map-style) through the wids index that `shardgen build` writes.

`ShardIndexDataset(source)[i]` returns the i-th sample of the shard set (in manifest order) as a dict with the same
keys as the streaming loader's batches, unbatched: uint8 `image [3, S, S]`, `text_embeddings [n, 512]`,
`captions`, `image_id`, `key`.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shardgen.format import WIDS_INDEX_NAME, decode_npy, join


class ShardIndexDataset(Dataset):
    def __init__(self, source: str, *, cache_dir: str | None = None) -> None:
        import wids

        with contextlib.redirect_stderr(io.StringIO()):  # wids prints an info line on every construction
            self.ds = wids.ShardListDataset(join(str(source), WIDS_INDEX_NAME), cache_dir=cache_dir,
                                            transformations=[])

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict:
        sample = self.ds[index]
        meta = json.loads(_read(sample[".json"]))
        with Image.open(io.BytesIO(_read(sample[".jpg"]))) as img:
            image = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)  # [3, S, S] uint8
        return {"image": image, "text_embeddings": torch.from_numpy(decode_npy(_read(sample[".npy"])).astype(np.float32)),
                "captions": meta["captions"], "image_id": int(meta["image_id"]), "key": sample["__key__"]}


def _read(value) -> bytes:
    return value.read() if hasattr(value, "read") else bytes(value)
