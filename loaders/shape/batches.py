"""Stage 3: records → a batch. `collate` builds everything but the pixels (ids, keys, captions, embeddings, the
schema's carried fields); `Decoder` decodes the JPEGs straight into the batch's pixel memory, on a thread pool
(libjpeg releases the GIL), each image augmented as the batch's `Augment` says; `to_torch` gives the caller
tensors.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .augment import Augment
from .decode import DecodeError, decode_into
from ..read.records import Record


def collate(records: list[Record], *, caption: str, embed_dim: int, jpeg: bool, carried: tuple = ()) -> dict:
    """Everything but the pixels: ids, keys, chosen caption(s) and their embeddings (`[B, D]`, or `[B, n_max, D]`
    with a mask for `caption="all"`), one array per field the schema adds for the loader to carry (`carried`, the
    parser's: `batch[ext]`); with `jpeg`, the raw JPEG bytes for decoding on the device."""
    _, keys, ids, captions, rows, _, extras = zip(*records)
    batch = {"image_id": np.array(ids, dtype=np.int64), "key": list(keys)}
    for i, field in enumerate(carried):
        batch[field.ext] = field.batch([e[i] for e in extras])
    if jpeg:
        batch["jpeg"] = [bytes(r.jpeg) for r in records]  # tensors in `to_torch` (not a shm segment each)
    if caption == "all":
        n_max = max(len(c) for c in captions)
        emb = np.zeros((len(records), n_max, embed_dim), dtype=np.float32)
        mask = np.zeros((len(records), n_max), dtype=bool)
        for i, r in enumerate(rows):
            k = len(r) // embed_dim
            emb[i, :k] = r.reshape(k, embed_dim)
            mask[i, :k] = True
        batch["text_embeddings"] = emb  # [B, n_max, D], zero rows where mask is False
        batch["caption_mask"] = mask  # [B, n_max]
        batch["captions"] = [list(c) for c in captions]
        return batch
    # one join: a batch's rows become one array (the schema makes every row float16)
    emb = np.frombuffer(b"".join([r[1] for r in rows]), rows[0][0]).reshape(len(rows), -1)
    batch["text_embedding"] = emb.astype(np.float32, copy=False)  # [B, D]
    batch["caption"] = list(captions)
    return batch


class _Done:
    """A finished 'future' for the no-thread path."""

    def __init__(self, value) -> None:
        self.value = value

    def result(self):
        return self.value


class Decoder:
    """Decodes batches of JPEGs into caller-given `[n, S, S, 3]` arrays on `threads` threads (1: inline), each
    image augmented as the batch's `Augment` (`loaders.shape.augment`) says."""

    def __init__(self, *, backend: str, threads: int, gil_switch_interval: float | None) -> None:
        self.backend = backend
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.threads = threads
        self.switch = sys.getswitchinterval()
        if self.pool is not None and gil_switch_interval is not None:
            # Decode threads release the GIL inside libjpeg but need it back between images; at the default 5 ms
            # they queue behind the parsing thread. Measured on 2 cores: 4.9k → 6.3k img/s at 0.2 ms.
            sys.setswitchinterval(min(self.switch, gil_switch_interval))

    @staticmethod
    def default_threads(workers: int) -> int:
        return max(1, (os.cpu_count() or 1) // workers)

    def close(self) -> None:
        sys.setswitchinterval(self.switch)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def start(self, records: list[Record], out: np.ndarray, augment: Augment, *, inline: bool = False) -> list:
        """Start decoding the records into `out`; returns futures of per-chunk lists of (index, DecodeError)."""
        jpegs, backend = [r.jpeg for r in records], self.backend

        def work(lo: int, hi: int) -> list:
            errors = []
            for i in range(lo, hi):
                try:
                    decode_into(jpegs[i], out[i], backend=backend, augment=augment, index=i)
                except DecodeError as exc:
                    errors.append((i, exc))
            return errors

        if self.pool is None or inline:
            return [_Done(work(0, len(records)))]
        n = self.threads
        bounds = [round(k * len(records) / n) for k in range(n + 1)]
        return [self.pool.submit(work, bounds[k], bounds[k + 1]) for k in range(n) if bounds[k] < bounds[k + 1]]


def to_torch(batch: dict, ring) -> dict:
    """A batch as the caller sees it: numpy fields as tensors, `image` as uint8 [B, 3, S, S] (channels-last
    strides: no CPU copy, and the layout GPU convolutions prefer); a ring slot becomes its shared pixels."""
    slot = batch.pop("_slot", None)
    if slot is not None:
        batch["image"], embeddings = ring.give(*slot)
        if "text_embedding" not in batch and "text_embeddings" not in batch:
            batch["text_embedding"] = embeddings
    if "jpeg" in batch:
        batch["jpeg"] = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in batch["jpeg"]]
    for k, v in batch.items():  # ids, embeddings, masks, the schema's carried fields
        if isinstance(v, np.ndarray):
            batch[k] = torch.from_numpy(v).permute(0, 3, 1, 2) if k == "image" else torch.from_numpy(v)
    return batch
