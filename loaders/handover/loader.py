"""The public façade: `make_loader(source, batch_size=..., ...)` → `ShardLoader`, an iterable of batches with
`len()`, `set_epoch(epoch, skip_batches)`, `state_dict()` / `load_state_dict()` and `close()`, and what a
trainer needs to know about its data (`shards`, `image_size`, `embed_dim`, `sources`, `backend`,
`batches_in_pass`).

The façade only delegates: its counters and resume to `progress.Progress`, its worker processes to
`lifecycle.Workers`. Without workers the main process runs the epoch pipeline itself (a DataLoader with
`batch_size=None` only pins); with `num_workers > 0` batches come from our worker processes
(`loaders.handover.workers`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import torch
from torch.utils.data import DataLoader

from ..config import LoaderConfig
from ..plan.sources import ShardSet, is_url_list, resolve_source, resolve_sources
from .lifecycle import Workers
from .progress import Progress
from .stream import ShardStream


class ShardLoader:
    """What `make_loader` returns: iterate for batches; `len()` batches per epoch; `set_epoch(e)` per epoch.

    Without `set_epoch`, each new iteration advances the epoch by itself (so reshuffling never silently stops).
    With `num_workers > 0`, batches come from worker processes, started on the first iteration and kept (unless
    `persistent_workers=False`) until `close()` or until the loader is collected.

    `state_dict()` says where the epoch stands in samples consumed by all ranks together; `load_state_dict()`
    continues there, also with another world size, number of workers or batch size (`loaders.plan.resume`).

    `cfg` is the loader's `LoaderConfig`; `dataset` its `ShardStream` (as a DataLoader's `dataset`: for code
    inside `loaders`; callers use the properties below).
    """

    def __init__(self, dataset: ShardStream, *, pin_memory: bool = False) -> None:
        self.dataset, self.cfg = dataset, dataset.cfg
        self.pin_memory = pin_memory
        self._progress = Progress(dataset)
        self._workers = Workers(dataset, pin_memory=pin_memory) if self.cfg.num_workers else None
        self._dataloader = (DataLoader(dataset, batch_size=None, num_workers=0, pin_memory=pin_memory,
                                       collate_fn=_as_is) if self.cfg.num_workers == 0 else None)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Like `DistributedSampler.set_epoch`; `skip_batches` resumes mid-epoch exactly. Right after
        `load_state_dict`, `set_epoch` of the loaded epoch keeps the loaded pass (the usual `for epoch in ...:
        set_epoch(epoch)` loop around a resume)."""
        self._progress.set_epoch(epoch, skip_batches)

    def state_dict(self, *, batches: int | None = None) -> dict:
        """Where the epoch stands (plain data, for a checkpoint): epoch, seed, samples consumed by all ranks
        together, and the layouts that consumed them. `batches`: how many batches of the current pass the caller
        has used, when fewer than the loader handed out (a device prefetcher holds the next one)."""
        return self._progress.state_dict(batches=batches)

    def state_after(self, batches: int) -> dict:
        """The state once `batches` batches of the next pass are used, without iterating: for a stand-in that
        serves the pass itself (`models.training.synthetic`)."""
        return self._progress.state(batches * self.cfg.batch_size)

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state_dict()` was taken: the next iteration yields the samples of that epoch not yet
        consumed by any rank, each once (the rank padding as in any epoch), then epochs go on as usual. Raises
        StateError when that is not possible (other shards; mid-epoch, another seed)."""
        resume = self._progress.plan(state)
        if resume.stream is not None:
            self.close()  # running workers were started without the remaining stream
        self._progress.resume(resume)

    @property
    def batches_in_pass(self) -> int:
        """Batches the next pass yields: `len(self)` for a whole epoch, fewer for the rest of one."""
        return self._progress.batches_in_pass

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    @property
    def embed_dim(self) -> int:
        """The width of the batches' text embeddings (the manifest's)."""
        return self.cfg.embed_dim

    @property
    def image_size(self) -> int:
        """The side of the batches' square images, in pixels (the option's, else the shards' own)."""
        return self.dataset.image_size

    @property
    def shards(self) -> ShardSet:
        """The shards read: their URLs, sample counts, manifests (`parts`: one per source when several)."""
        return self.dataset.shards

    @property
    def backend(self) -> str:
        """The CPU JPEG decoder of the batches ("simplejpeg" or "pil": the option's "auto" resolved)."""
        return self.dataset.pipeline.backend

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
        if self._workers is not None:
            self._workers.close()

    def __iter__(self) -> Iterator[dict]:
        self._progress.begin_pass()
        if self._dataloader is not None:
            return self._progress.counted(iter(self._dataloader))
        return self._progress.counted(self._workers.iter_pass())


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
