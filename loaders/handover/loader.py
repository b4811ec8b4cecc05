"""The public façade: `make_loader(source, batch_size=..., ...)` → `ShardLoader`, an iterable of batches with
`len()`, `set_epoch(epoch, skip_batches)`, `state_dict()` / `load_state_dict()` (`loaders.plan.resume`) and `close()`.

Without workers the main process runs the epoch pipeline itself (a DataLoader with `batch_size=None` only pins);
with `num_workers > 0` batches come from our worker processes (`loaders.handover.workers`) as numpy fields plus a slot
of shared memory, and are turned into tensors (and pinned, on a background thread) here.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import replace

import torch
from torch.utils.data import DataLoader

from ..shape.batches import to_torch
from ..config import LoaderConfig
from ..plan.ranks import rank_batches
from .slots import SlotRing
from ..plan.sources import is_url_list, resolve_source, resolve_sources
from ..plan.resume import EpochState, Segment, parse_state, plan_resume, shards_identity
from .stream import ShardStream
from .workers import WorkerPool

log = logging.getLogger("loaders")


class ShardLoader:
    """What `make_loader` returns: iterate for batches; `len()` batches per epoch; `set_epoch(e)` per epoch.

    Without `set_epoch`, each new iteration advances the epoch by itself (so reshuffling never silently stops).
    With `num_workers > 0`, batches come from worker processes, started on the first iteration and kept (unless
    `persistent_workers=False`) until `close()` or until the loader is collected.

    `state_dict()` says where the epoch stands in samples consumed by all ranks together; `load_state_dict()`
    continues there, also with another world size, number of workers or batch size (`loaders.plan.resume`).
    """

    def __init__(self, dataset: ShardStream, *, pin_memory: bool = False) -> None:
        self.dataset, self.cfg = dataset, dataset.cfg
        self.pin_memory = pin_memory
        self.ring: SlotRing | None = None
        self._pool: WorkerPool | None = None
        self._no_ring = False
        self._explicit_epoch = False
        self._next_epoch = 0
        self._history: tuple[Segment, ...] = ()  # the epoch's segments before the one being read
        self._base = 0  # samples (all ranks) that segment consumed before the current pass
        self._yielded = self._batches = 0  # samples and batches this rank yielded in the current pass
        self._loaded = False  # load_state_dict chose the next pass
        self._dataloader = (DataLoader(dataset, batch_size=None, num_workers=0, pin_memory=pin_memory,
                                       collate_fn=_as_is) if self.cfg.num_workers == 0 else None)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Like `DistributedSampler.set_epoch`; `skip_batches` resumes mid-epoch exactly. Right after
        `load_state_dict`, `set_epoch` of the loaded epoch keeps the loaded pass (the usual `for epoch in ...:
        set_epoch(epoch)` loop around a resume)."""
        if self._loaded and epoch == self.epoch and skip_batches == 0:
            return
        self._explicit_epoch = True
        self._loaded = False
        self.dataset.set_epoch(epoch, skip_batches)
        self._history, self._base = (), self.dataset.world_size * skip_batches * self.cfg.batch_size
        self._yielded = self._batches = 0

    def state_dict(self, *, batches: int | None = None) -> dict:
        """Where the epoch stands (plain data, for a checkpoint): epoch, seed, samples consumed by all ranks
        together, and the layouts that consumed them. `batches`: how many batches of the current pass the caller
        has used, when fewer than the loader handed out (a device prefetcher holds the next one)."""
        n = self._yielded
        if batches is not None:
            if not 0 <= batches <= self._batches:
                raise ValueError(f"batches={batches}: this pass has handed out {self._batches}")
            n = self._yielded if batches == self._batches else batches * self.cfg.batch_size
        return self._state(n)

    def state_after(self, batches: int) -> dict:
        """The state once `batches` batches of the next pass are used, without iterating: for a stand-in that
        serves the pass itself (`models.training.synthetic`)."""
        return self._state(batches * self.cfg.batch_size)

    def _state(self, n: int) -> dict:
        """The state after `n` samples per rank of the current pass."""
        segment = Segment(self.dataset.pipeline.layout, self._base + self.dataset.world_size * n)
        shards = self.dataset.shards
        return EpochState(self.epoch, self.cfg.seed, self.cfg.shuffle, self.cfg.resampled, shards.n_samples,
                          len(shards.urls), (*self._history, segment), shards_identity(shards)).as_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state_dict()` was taken: the next iteration yields the samples of that epoch not yet
        consumed by any rank, each once (the rank padding as in any epoch), then epochs go on as usual. Raises
        ValueError when that is not possible (other shards; mid-epoch, another seed)."""
        cfg, shards = self.cfg, self.dataset.shards
        resume = plan_resume(parse_state(state), layout=self.dataset.pipeline.layout, seed=cfg.seed,
                             shuffle=cfg.shuffle, resampled=cfg.resampled, n_samples=shards.n_samples,
                             n_shards=len(shards.urls), shards=shards_identity(shards))
        if resume.stream is not None:
            self.close()  # running workers were started without the remaining stream
        self.dataset.resume(resume.epoch, resume.stream, resume.skip_batches)
        self._history, self._base = resume.history, resume.base
        self._yielded = self._batches = 0
        self._loaded, self._next_epoch = True, resume.epoch + 1

    @property
    def batches_in_pass(self) -> int:
        """Batches the next pass yields: `len(self)` for a whole epoch, fewer for the rest of one."""
        remaining = self.dataset.pipeline.remaining if int(self.dataset.control[3]) else None
        total = len(self) if remaining is None else rank_batches(len(remaining), self.dataset.pipeline.layout)
        return max(0, total - self.dataset.skip_batches)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    @property
    def embed_dim(self) -> int:
        """The width of the batches' text embeddings (the manifest's)."""
        return self.cfg.embed_dim

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources as given when several (`batch["source"]` indexes them), else ()."""
        return self.dataset.shards.names

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
        if self._loaded:  # the pass load_state_dict chose
            self._loaded = False
        elif not self._explicit_epoch:
            self.set_epoch(self._next_epoch)
            self._explicit_epoch = False
            self._next_epoch += 1
        self._yielded = self._batches = 0
        if self._dataloader is not None:
            return self._counted(iter(self._dataloader))
        return self._iter_workers()

    def _counted(self, batches: Iterator[dict]) -> Iterator[dict]:
        for batch in batches:
            self._batches += 1
            self._yielded += len(batch["key"])
            yield batch

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
        generation, epoch, skip_batches, resumed = control.tolist()
        # a new generation: slots of abandoned iterations become free
        generation = self._pool.next_generation(generation, epoch, skip_batches, resumed)
        control[0] = generation
        if self.ring is not None:
            self.ring.release_unused()  # and those of batches the caller dropped since the last one arrived
        batches = self._converted(self._pool.epoch(generation, epoch, skip_batches, resumed))
        # Pinning copies each batch (9.6 MB for 64 images): a thread does it while the caller trains.
        source = in_background(batches, depth=self.cfg.prefetch_factor) if self.pin_memory else batches
        try:
            yield from self._counted(source)
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


def make_loader(source, *, batch_size: int, num_workers: int = 0, shuffle: bool = True, seed: int = 0,
                caption: str = "random", **options) -> ShardLoader:
    """Stream shards as batches: see `LoaderConfig` for the options and docs/ for the batch keys. `source`: a
    shard folder or URL, a brace pattern, a list of shard URLs, or a list of such sources (with `weights=[...]`
    and `epoch_samples=N`: mixed, `loaders.plan.mixing`; without: concatenated)."""
    cfg = LoaderConfig(batch_size=batch_size, num_workers=num_workers, shuffle=shuffle, seed=seed, caption=caption,
                       **options)
    shards = open_sources(source, cfg)
    if cfg.embed_dim is None:
        cfg = replace(cfg, embed_dim=shards.embed_dim)
    rank, world = cfg.rank_world()
    dataset = ShardStream(shards, cfg, rank=rank, world_size=world)
    pin = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
    return ShardLoader(dataset, pin_memory=pin)


def open_sources(source, cfg: LoaderConfig):
    """The `ShardSet` of `source` under `cfg` (one set, a list of shard URLs, or several sources). Raises
    SourceError."""
    mixed = cfg.weights is not None or cfg.epoch_samples is not None
    if isinstance(source, (str, os.PathLike)):
        if not mixed:
            return resolve_source(source, storage_options=cfg.storage_options, embed_dim=cfg.embed_dim)
        source = [source]
    elif is_url_list(source) and not mixed:
        return resolve_source(source, storage_options=cfg.storage_options, embed_dim=cfg.embed_dim)
    return resolve_sources(list(source), weights=cfg.weights, epoch_samples=cfg.epoch_samples,
                           storage_options=cfg.storage_options, embed_dim=cfg.embed_dim)


def _as_is(batch: dict) -> dict:
    """Batches are already tensors: skip DataLoader's per-element `default_convert` walk."""
    return batch
