"""The public façade: `make_loader(source, batch_size=..., ...)` → `ShardLoader`, an iterable of batches with
`len()`, `set_epoch(epoch, skip_batches)` and `close()`.

Without workers the main process runs the epoch pipeline itself (a DataLoader with `batch_size=None` only pins);
with `num_workers > 0` batches come from our worker processes (`loaders.workers`) as numpy fields plus a slot
of shared memory, and are turned into tensors (and pinned, on a background thread) here.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from .batches import to_torch
from .config import LoaderConfig
from .slots import SlotRing
from .sources import resolve_source
from .stream import ShardStream
from .workers import WorkerPool

log = logging.getLogger("loaders")


class ShardLoader:
    """What `make_loader` returns: iterate for batches; `len()` batches per epoch; `set_epoch(e)` per epoch.

    Without `set_epoch`, each new iteration advances the epoch by itself (so reshuffling never silently stops).
    With `num_workers > 0`, batches come from worker processes, started on the first iteration and kept (unless
    `persistent_workers=False`) until `close()` or until the loader is collected.
    """

    def __init__(self, dataset: ShardStream, *, pin_memory: bool = False) -> None:
        self.dataset, self.cfg = dataset, dataset.cfg
        self.pin_memory = pin_memory
        self.ring: SlotRing | None = None
        self._pool: WorkerPool | None = None
        self._no_ring = False
        self._explicit_epoch = False
        self._next_epoch = 0
        self._dataloader = (DataLoader(dataset, batch_size=None, num_workers=0, pin_memory=pin_memory,
                                       collate_fn=_as_is) if self.cfg.num_workers == 0 else None)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Like `DistributedSampler.set_epoch`; `skip_batches` resumes mid-epoch exactly."""
        self._explicit_epoch = True
        self.dataset.set_epoch(epoch, skip_batches)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def samples_per_epoch(self) -> int:
        return self.dataset.samples_per_epoch

    def close(self) -> None:
        """Stop the worker processes (a later iteration starts new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __iter__(self) -> Iterator[dict]:
        if not self._explicit_epoch:
            self.dataset.set_epoch(self._next_epoch)
            self._next_epoch += 1
        if self._dataloader is not None:
            return iter(self._dataloader)
        return self._iter_workers()

    def _start_workers(self) -> WorkerPool:
        cfg, size = self.cfg, self.dataset.image_size
        if self.ring is None and cfg.decode == "cpu" and not self._no_ring:
            # per worker: the batches it may run ahead, the one being decoded and the next, and the two the
            # caller may still hold (the current batch and, during `next`, the previous one)
            try:
                self.ring = SlotRing(cfg.num_workers, cfg.prefetch_factor + 4, (cfg.batch_size, size, size, 3),
                                     cfg.embed_dim)
            except (RuntimeError, OSError) as exc:  # e.g. a container's small /dev/shm
                self._no_ring = True
                log.warning("no shared-memory batch slots (%s); workers send each batch in its own segment", exc)
        return WorkerPool(self.dataset.pipeline, self.ring, cfg.num_workers, prefetch=cfg.prefetch_factor,
                          seed=cfg.seed, guess=cfg.persistent_workers)

    def _iter_workers(self) -> Iterator[dict]:
        if self._pool is not None and not self._pool.healthy:  # a worker died (killed, out of memory): start anew
            self.close()
        if self._pool is None:
            self._pool = self._start_workers()
        control = self.dataset.control
        generation, epoch, skip_batches = control.tolist()
        # a new generation: slots of abandoned iterations become free
        generation = self._pool.next_generation(generation, epoch, skip_batches)
        control[0] = generation
        if self.ring is not None:
            self.ring.release_unused()  # and those of batches the caller dropped since the last one arrived
        batches = self._converted(self._pool.epoch(generation, epoch, skip_batches))
        try:
            # Pinning copies each batch (9.6 MB for 64 images): a thread does it while the caller trains.
            yield from in_background(batches, depth=self.cfg.prefetch_factor) if self.pin_memory else batches
        finally:
            batches.close()
            if not self.cfg.persistent_workers:
                self.close()

    def _converted(self, batches: Iterator[dict]) -> Iterator[dict]:
        ring = self.ring
        try:
            for batch in batches:
                if ring is not None:
                    ring.release_unused()  # every batch, also those that came without a slot
                batch = to_torch(batch, ring)
                yield pinned(batch) if self.pin_memory else batch
        finally:
            batches.close()


def pinned(batch: dict) -> dict:
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def in_background(items: Iterator, *, depth: int) -> Iterator:
    """Iterate `items` on a thread, up to `depth` ahead; its errors are raised here; closing stops the thread."""
    out: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        out.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - not handled here: handed to the consumer, raised there
            out.put((None, exc))

    thread = threading.Thread(target=run, name="shardloader-pin", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = out.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def make_loader(source, *, batch_size: int, num_workers: int = 0, shuffle: bool = True, seed: int = 0,
                caption: str = "random", **options) -> ShardLoader:
    """Stream shards as batches: see `LoaderConfig` for the options and docs/ for the batch keys."""
    cfg = LoaderConfig(batch_size=batch_size, num_workers=num_workers, shuffle=shuffle, seed=seed, caption=caption,
                       **options)
    shards = resolve_source(source, storage_options=cfg.storage_options, embed_dim=cfg.embed_dim)
    rank, world = cfg.rank_world()
    dataset = ShardStream(shards, cfg, rank=rank, world_size=world)
    pin = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
    return ShardLoader(dataset, pin_memory=pin)


def _as_is(batch: dict) -> dict:
    """Batches are already tensors: skip DataLoader's per-element `default_convert` walk."""
    return batch
