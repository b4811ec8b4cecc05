"""A `ShardLoader`'s worker processes over their lifetime: the pool (`workers.WorkerPool`) and its shared-memory
slot ring (`slots.SlotRing`), started on the first pass, started anew after a worker died, kept across epochs
(unless `persistent_workers=False`) and stopped by `close()`; each pass's batches arrive as numpy fields plus a
slot, are turned into tensors here and, with `pin_memory`, pinned on a background thread while the caller
trains."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import torch

from ..shape.batches import to_torch
from .slots import SlotRing
from .stream import ShardStream
from .workers import WorkerPool

log = logging.getLogger("loaders")


class Workers:
    """The worker processes of one loader and the batches of each pass they serve."""

    def __init__(self, stream: ShardStream, *, pin_memory: bool) -> None:
        self.stream, self.cfg, self.pin_memory = stream, stream.cfg, pin_memory
        self.ring: SlotRing | None = None
        self.pool: WorkerPool | None = None
        self._no_ring = False  # the slots could not be allocated once: not tried again

    def close(self) -> None:
        """Stop the worker processes (a later pass starts new ones)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _start(self) -> WorkerPool:
        cfg, size = self.cfg, self.stream.image_size
        if self.ring is None and cfg.decode == "cpu" and not self._no_ring:
            # per worker: the batches it may run ahead, the one being decoded and the next, and the two the
            # caller may still hold (the current batch and, during `next`, the previous one)
            try:
                self.ring = SlotRing(cfg.num_workers, cfg.prefetch_factor + 4, (cfg.batch_size, size, size, 3),
                                     cfg.embed_dim)
            except (RuntimeError, OSError) as exc:  # e.g. a container's small /dev/shm
                self._no_ring = True
                log.warning("no shared-memory batch slots (%s); workers send each batch in its own segment", exc)
        return WorkerPool(self.stream.pipeline, self.ring, cfg.num_workers, prefetch=cfg.prefetch_factor,
                          seed=cfg.seed, guess=cfg.persistent_workers)

    def iter_pass(self) -> Iterator[dict]:
        """The batches of the pass the stream selects, as tensors (pinned with `pin_memory`)."""
        if self.pool is not None and not self.pool.healthy:  # a worker died (killed, out of memory): start anew
            self.close()
        if self.pool is None:
            self.pool = self._start()
        control = self.stream.control
        generation, epoch, skip_batches, resumed = control.tolist()
        # a new generation: slots of abandoned iterations become free
        generation = self.pool.next_generation(generation, epoch, skip_batches, resumed)
        control[0] = generation
        if self.ring is not None:
            self.ring.release_unused()  # and those of batches the caller dropped since the last one arrived
        batches = self._converted(self.pool.epoch(generation, epoch, skip_batches, resumed))
        # Pinning copies each batch (9.6 MB for 64 images): a thread does it while the caller trains.
        source = in_background(batches, depth=self.cfg.prefetch_factor) if self.pin_memory else batches
        try:
            yield from source
        finally:
            source.close()
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
