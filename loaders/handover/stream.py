"""`ShardStream`: the loader as a torch `IterableDataset` of whole batches, for a caller who wants to wrap it in a
DataLoader of their own (`DataLoader(stream, batch_size=None, num_workers=N)`). `make_loader` uses it too, for
the epoch it is asked for and the length of an epoch.

The epoch travels to a caller's DataLoader workers through a small shared tensor set in the main process (the
workers are forked once and keep their copy of everything else, including a resumed epoch's remaining stream:
`resume` before the workers start).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..config import LoaderConfig
from ..shape.decode import available_backends
from .epoch import EpochPipeline
from ..plan.ranks import rank_samples
from .slots import LocalMemory, SharedMemory
from ..plan.sources import ShardSet
from .workers import freeze_inherited_objects


class ShardStream(IterableDataset):
    """IterableDataset yielding whole batches (use with `DataLoader(batch_size=None)`); `set_epoch` per epoch."""

    def __init__(self, shards: ShardSet, cfg: LoaderConfig, *, rank: int, world_size: int) -> None:
        super().__init__()
        self.shards, self.cfg, self.rank, self.world_size = shards, cfg, rank, world_size
        # (iteration generation, epoch, skip_batches, resumed), shared with a caller's DataLoader workers
        self.control = torch.zeros(4, dtype=torch.int64).share_memory_()
        pre = shards.manifest.preprocess if shards.manifest else {}
        self.image_size = cfg.image_size or int(pre.get("image_size", 224))
        backend = available_backends()[0] if cfg.backend == "auto" else cfg.backend
        self.pipeline = EpochPipeline(shards, cfg, rank=rank, world_size=world_size, image_size=self.image_size,
                                      backend=backend)
        self.memory = LocalMemory()  # batch arrays of the main process (reused); any number of shards will do:
        # producers split the epoch at sample granularity, inside shards (`plan`), and seek there (`seek`)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch; `skip_batches` resumes mid-epoch (skipped batches are read but not decoded)."""
        self.control[1], self.control[2], self.control[3] = int(epoch), int(skip_batches), 0

    def resume(self, epoch: int, remaining: np.ndarray | None, skip_batches: int = 0) -> None:
        """Select what is left of `epoch`: the stream positions `remaining` (in order, see `loaders.plan.resume`), or
        with None the whole epoch, after `skip_batches`. Workers see `remaining` only if started after this."""
        self.pipeline.remaining = remaining
        self.set_epoch(epoch, skip_batches)
        self.control[3] = int(remaining is not None)

    @property
    def epoch(self) -> int:
        return int(self.control[1])

    @property
    def skip_batches(self) -> int:
        return int(self.control[2])

    @property
    def resumed(self) -> bool:
        """The selected pass is the rest of a resumed epoch (`resume` with a remaining stream)."""
        return bool(self.control[3])

    def __len__(self) -> int:
        """Batches this rank yields per epoch (identical on every rank)."""
        return len(self.pipeline)

    @property
    def samples_per_epoch(self) -> int:
        """Samples this rank yields per epoch."""
        n = rank_samples(self.shards.n_samples, world_size=self.world_size, drop_last=self.cfg.drop_last)
        return (n // self.cfg.batch_size) * self.cfg.batch_size if self.cfg.drop_last else n

    def __iter__(self) -> Iterator[dict]:
        """One epoch, in this process or in a worker of a caller's own DataLoader (whose batches then leave as
        numpy fields with pixels in a shared tensor; DataLoader converts them)."""
        info = get_worker_info()
        generation, epoch, skip_batches, resumed = self.control.tolist()
        if info is None:
            return self.pipeline.iter_batches(0, generation=generation, epoch=epoch, skip_batches=skip_batches,
                                              memory=self.memory, resumed=bool(resumed))
        freeze_inherited_objects()
        return self.pipeline.iter_batches(info.id, generation=generation, epoch=epoch, skip_batches=skip_batches,
                                          memory=SharedMemory(None, info.id), resumed=bool(resumed))
