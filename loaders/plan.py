"""Epoch planning: which samples of which shards each (rank, worker) reads, as a pure function.

The epoch's sample stream is the concatenation of all shards in an order shuffled by (seed, epoch), so the
assignment of shards to ranks and workers changes every epoch. Rank r takes positions [r·T, (r+1)·T) of that
stream with T = ⌈N / world⌉; the last rank wraps around to the stream's start for the < world padding samples
(exactly what `DistributedSampler` does). Every rank thus yields the same number of batches, ⌈T / B⌉, and one
epoch covers every sample exactly once plus that padding. Inside a rank, worker w reads a contiguous run of the
rank's range whose length is the total size of the batches the DataLoader will take from it (batches go
round-robin over workers), so the rank's batch count does not depend on the number of workers. Boundaries may
fall inside a shard: a worker then skips the shard's first samples without decoding them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    """Samples [start, stop) of shard `shard` (an index into the shard list)."""

    shard: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def rank_samples(n_total: int, *, world_size: int, drop_last: bool = False) -> int:
    """Samples each rank yields per epoch."""
    return n_total // world_size if drop_last else math.ceil(n_total / world_size)


def batches_per_rank(n_total: int, *, world_size: int, batch_size: int, drop_last: bool = False) -> int:
    per_rank = rank_samples(n_total, world_size=world_size, drop_last=drop_last)
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


def worker_batch_sizes(n_rank: int, *, batch_size: int, num_workers: int, worker: int,
                       drop_last: bool = False) -> list[int]:
    """Sizes of the batches worker `worker` yields: batch i of the rank comes from worker i % num_workers."""
    n_batches = n_rank // batch_size if drop_last else math.ceil(n_rank / batch_size)
    sizes = []
    for i in range(worker, n_batches, num_workers):
        sizes.append(min(batch_size, n_rank - i * batch_size))
    return sizes


def shard_order(n_shards: int, *, seed: int, epoch: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(n_shards))
    return [int(i) for i in np.random.default_rng([seed, epoch, 0x5EED]).permutation(n_shards)]


def _positions_to_spans(order: list[int], counts: list[int], start: int, length: int) -> list[Span]:
    """Spans covering `length` stream positions from `start` (mod N) in the stream of shards in `order`."""
    total = sum(counts)
    offsets = np.cumsum([0] + [counts[s] for s in order])
    spans: list[Span] = []
    pos, left = start % total if total else 0, length
    while left > 0:
        k = int(np.searchsorted(offsets, pos, side="right") - 1)  # index into order
        shard = order[k]
        inner = pos - int(offsets[k])
        take = min(left, counts[shard] - inner)
        if spans and spans[-1].shard == shard and spans[-1].stop == inner:
            spans[-1] = Span(shard, spans[-1].start, inner + take)
        else:
            spans.append(Span(shard, inner, inner + take))
        left -= take
        pos = (pos + take) % total
    return spans


def plan_worker(counts: list[int], *, rank: int, world_size: int, worker: int, num_workers: int,
                batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                drop_last: bool = False) -> tuple[list[Span], list[int]]:
    """(spans to read, batch sizes to yield) for one worker of one rank in one epoch."""
    n_total = sum(counts)
    if n_total == 0:
        return [], []
    n_rank = rank_samples(n_total, world_size=world_size, drop_last=drop_last)
    sizes = [worker_batch_sizes(n_rank, batch_size=batch_size, num_workers=num_workers, worker=w,
                                drop_last=drop_last) for w in range(num_workers)]
    start = rank * n_rank + sum(sum(s) for s in sizes[:worker])
    order = shard_order(len(counts), seed=seed, epoch=epoch, shuffle=shuffle)
    return _positions_to_spans(order, counts, start, sum(sizes[worker])), sizes[worker]


def plan_resampled(counts: list[int], *, n_samples: int, rng: np.random.Generator) -> list[Span]:
    """Whole shards drawn with replacement (weighted by size) until `n_samples` are covered."""
    spans: list[Span] = []
    p = np.asarray(counts, dtype=np.float64) / sum(counts)
    left = n_samples
    while left > 0:
        shard = int(rng.choice(len(counts), p=p))
        take = min(left, counts[shard])
        spans.append(Span(shard, 0, take))
        left -= take
    return spans
