"""Where a batch's pixels are decoded: reused memory, so no batch costs fresh pages.

- `LocalMemory` (the main process): arrays from a `BufferPool`, reused once nobody holds them; batches leave as
  tensors.
- `SharedMemory` (a worker process, ours or a caller's DataLoader's): a slot of the `SlotRing` the main process
  allocated, else a fresh shared tensor; batches leave as numpy fields plus the slot, and the main process turns
  them into tensors (`batches.to_torch`).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np
import torch

from ..shape.batches import to_torch


class BufferPool:
    """Reuses batch arrays nobody holds any more: a fresh 9.6 MB array costs ~2.3 ms of page faults per batch of
    64 here (~36 µs per image). An array is reused only when no tensor or view of it is alive anywhere (its
    refcount is back to the pool's own), so batches a caller keeps are never overwritten."""

    def __init__(self, size: int = 6) -> None:
        self.size, self.arrays = size, []

    def __getstate__(self) -> dict:  # DataLoader workers (spawn) get an empty pool, not megabytes of pixels
        return {"size": self.size, "arrays": []}

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        for a in self.arrays:
            if a.shape == shape and sys.getrefcount(a) == 3:  # the list, `a`, and getrefcount's argument
                return a
        a = np.empty(shape, dtype=np.uint8)
        self.arrays = (self.arrays + [a])[-self.size:]
        return a


class SlotRing:
    """Batch arrays in shared memory that worker processes fill and the main process reads, reused.

    Without it each worker batch costs a fresh shared-memory segment: `share_memory_()` of 9.6 MB (batch 64) takes
    ~7 ms here, and the main process page-faults the new mapping again (~2.3 ms), more than decoding 40 images.
    Slots are allocated once. `state[w, k]`: 0 free; g > 0 taken by worker w in iteration generation g; -1 held
    by the main process. A worker takes a slot that is free or left over from a generation before the previous
    one (a batch never taken because an iteration was abandoned, or a guessed epoch nobody asked for; the
    previous generation's last batches may still be on their way while a worker starts the next epoch),
    decodes into it and sends only its number; the main process wraps it as the batch's `image` and frees it
    once nothing references that array any more (the `_BufferPool` rule). Each cell is written by one side at a
    time. A worker that finds no free slot (the caller keeps many batches alive) falls back to a fresh shared
    tensor, so nothing ever waits on a slot."""

    def __init__(self, workers: int, slots: int, shape: tuple[int, ...], embed_dim: int) -> None:
        self.pixels = torch.empty((workers, slots, *shape), dtype=torch.uint8).share_memory_()
        self.embeddings = torch.empty((workers, slots, shape[0], embed_dim), dtype=torch.float32).share_memory_()
        self.state = torch.zeros((workers, slots), dtype=torch.int64).share_memory_()
        self._views: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # main process: slots given to the caller
        self._np: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {"pixels": self.pixels, "embeddings": self.embeddings, "state": self.state, "_views": [], "_np": None}

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """numpy views of (pixels, embeddings, state) in this process (indexing numpy is ~20× cheaper)."""
        if self._np is None:
            self._np = (self.pixels.numpy(), self.embeddings.numpy(), self.state.numpy())
        return self._np

    def acquire(self, worker: int, generation: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        """Worker side: a free slot of this worker's, marked taken, as (index, pixels [B, S, S, 3], embeddings
        [B, D])."""
        pixels, embeddings, state = self.arrays()
        mine = state[worker]
        # One read of each cell (a copy), then the tests: evaluated on the live array, `mine > 0` and `mine <
        # generation - 1` would read a cell twice, and the main process taking the slot in between (g → -1)
        # would pass both, handing out a slot the caller holds.
        seen = mine.copy()
        free = np.flatnonzero((seen == 0) | ((seen > 0) & (seen < generation - 1)))
        if not len(free):
            return None
        k = int(free[0])
        mine[k] = generation
        return k, pixels[worker, k], embeddings[worker, k]

    def give(self, worker: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Main side: the first n images and embeddings of slot k, held until the caller lets go of both."""
        pixels, embeddings, state = self.arrays()
        state[worker, k] = -1
        views = pixels[worker, k, :n], embeddings[worker, k, :n]
        self._views.append((worker, k, *views))
        return views

    def release_unused(self) -> None:
        state = self.arrays()[2]
        keep = []
        for item in self._views:
            # held while anyone besides this list (and getrefcount's argument) refers to either array
            if sys.getrefcount(item[2]) > 2 or sys.getrefcount(item[3]) > 2:
                keep.append(item)
            else:
                state[item[0], item[1]] = 0
        self._views = keep


class _Pixels(NamedTuple):
    """A batch's pixel memory ([n, S, S, 3] uint8) and how the batch refers to it once decoded."""

    pixels: np.ndarray
    slot: tuple | None = None  # (worker, k, n, embeddings [n, D]) of a ring slot
    shared: torch.Tensor | None = None  # a fresh shared tensor (no free slot)

    def attach(self, batch: dict) -> dict:
        if self.slot is not None:  # the main process fills in `image` and the embeddings from the slot
            worker, k, n, embeddings = self.slot
            if "text_embedding" in batch:  # 128 KB to pickle per batch of 64: it travels in the slot instead
                embeddings[...] = batch.pop("text_embedding")
            batch["_slot"] = (worker, k, n)
        elif self.shared is not None:
            batch["image"] = self.shared.permute(0, 3, 1, 2)
        else:
            batch["image"] = self.pixels
        return batch


class LocalMemory:
    """Batches decoded in the process that trains: reused arrays, delivered as tensors."""

    def __init__(self) -> None:
        self.pool = BufferPool()

    def allocate(self, n: int, size: int, generation: int) -> _Pixels:
        return _Pixels(self.pool.get((n, size, size, 3)))

    def deliver(self, batch: dict) -> dict:
        return to_torch(batch, None)


class SharedMemory:
    """Batches decoded in worker process `worker`: into a slot of `ring` (None: a fresh shared tensor each), so
    the batch crosses to the main process without a 9.6 MB copy per batch of 64. Delivered as numpy fields."""

    def __init__(self, ring: SlotRing | None, worker: int) -> None:
        self.ring, self.worker = ring, worker

    def allocate(self, n: int, size: int, generation: int) -> _Pixels:
        slot = self.ring.acquire(self.worker, generation) if self.ring is not None else None
        if slot is not None:
            return _Pixels(slot[1][:n], slot=(self.worker, slot[0], n, slot[2][:n]))
        shared = torch.empty((n, size, size, 3), dtype=torch.uint8).share_memory_()
        return _Pixels(shared.numpy(), shared=shared)

    def deliver(self, batch: dict) -> dict:
        return batch
