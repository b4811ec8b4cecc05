"""Epoch planning: which samples of which shards each (rank, worker) reads, as a pure function.

The epoch's sample stream is the concatenation of all shards in an order shuffled by (seed, epoch), so the
assignment of shards to ranks and workers changes every epoch. Rank r takes positions [r·T, (r+1)·T) of that
stream with T = ⌈N / world⌉; the last rank wraps around to the stream's start for the < world padding samples
(exactly what `DistributedSampler` does). Every rank thus yields the same number of batches, ⌈T / B⌉, and one
epoch covers every sample exactly once plus that padding. Inside a rank, worker w reads a contiguous run of the
rank's range whose length is the total size of the batches the DataLoader will take from it (batches go
round-robin over workers), so the rank's batch count does not depend on the number of workers. Boundaries may
fall inside a shard: a worker then skips the shard's first samples without decoding them.

A resumed epoch (`loaders.plan.resume`) is planned the same way over a shorter stream: the positions of the epoch's
stream not yet seen, in stream order. Which positions a past layout saw is replayed from the plan alone — its
shares, its batch sizes and the order its shuffle buffers gave out — without reading a byte, because the shuffle
draws from a generator of its own (`shuffle_rng`), whose sequence depends only on the number of samples.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .seeds import generator
from .shuffle import iter_shuffled


@dataclass(frozen=True)
class Span:
    """Samples [start, stop) of shard `shard` (an index into the shard list), but those in `skip` (in a resumed
    epoch: samples already seen, read past without parsing)."""

    shard: int
    start: int
    stop: int
    skip: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return self.stop - self.start - len(self.skip)


class Pieces(NamedTuple):
    """An epoch's stream as runs of consecutive samples: run k is samples [start[k], start[k] + length[k]) of
    shard `shard[k]` (int64 arrays). One set's stream is its whole shards in shuffled order (`whole_shards`); a
    mixed epoch's is chunks of several sets' shards (`loaders.plan.mixing`)."""

    shard: np.ndarray
    start: np.ndarray
    length: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        """Stream position of each run's first sample, and the stream's length last."""
        return np.concatenate([[0], np.cumsum(self.length)]).astype(np.int64)


def whole_shards(counts: list[int], order: list[int]) -> Pieces:
    """The stream of the shards in `order`, each read whole."""
    shard = np.asarray(order, dtype=np.int64)
    return Pieces(shard, np.zeros(len(order), dtype=np.int64), np.asarray(counts, dtype=np.int64)[shard])


@dataclass(frozen=True)
class Layout:
    """What cuts an epoch's stream into batches: ranks, producers per rank (workers, at least 1), batch size,
    drop_last, and the shuffle buffer's size (0: no shuffling)."""

    world_size: int
    workers: int
    batch_size: int
    drop_last: bool = False
    shuffle_buffer: int = 0


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
    return [int(i) for i in generator("plan", seed, epoch).permutation(n_shards)]


def _positions_to_spans(pieces: Pieces, start: int, length: int) -> list[Span]:
    """Spans covering `length` stream positions from `start` (mod N) of the stream `pieces`."""
    offsets = pieces.offsets
    total = int(offsets[-1])
    spans: list[Span] = []
    pos, left = start % total if total else 0, length
    while left > 0:
        k = int(np.searchsorted(offsets, pos, side="right") - 1)  # index into the runs
        shard = int(pieces.shard[k])
        inner = int(pieces.start[k]) + pos - int(offsets[k])
        take = min(left, int(offsets[k + 1]) - pos)
        if spans and spans[-1].shard == shard and spans[-1].stop == inner:
            spans[-1] = Span(shard, spans[-1].start, inner + take)
        else:
            spans.append(Span(shard, inner, inner + take))
        left -= take
        pos = (pos + take) % total
    return spans


def worker_share(n_total: int, layout: Layout, *, rank: int, worker: int) -> tuple[int, list[int]]:
    """(first stream position, batch sizes) of producer `worker` of `rank` in a stream of `n_total` positions; its
    positions are the next sum(sizes), modulo n_total (the last rank's padding wraps to the stream's start)."""
    n_rank = rank_samples(n_total, world_size=layout.world_size, drop_last=layout.drop_last)
    sizes = [worker_batch_sizes(n_rank, batch_size=layout.batch_size, num_workers=layout.workers, worker=w,
                                drop_last=layout.drop_last) for w in range(layout.workers)]
    return rank * n_rank + sum(sum(s) for s in sizes[:worker]), sizes[worker]


def epoch_pieces(counts: list[int], *, seed: int, epoch: int, shuffle: bool, pieces: Pieces | None) -> Pieces:
    """The epoch's stream: `pieces` when given (a mixed epoch), else the shards whole in shuffled order."""
    if pieces is not None:
        return pieces
    return whole_shards(counts, shard_order(len(counts), seed=seed, epoch=epoch, shuffle=shuffle))


def plan_worker(counts: list[int], *, rank: int, world_size: int, worker: int, num_workers: int,
                batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                drop_last: bool = False, pieces: Pieces | None = None) -> tuple[list[Span], list[int]]:
    """(spans to read, batch sizes to yield) for one worker of one rank in one epoch (`pieces`: the epoch's
    stream when it is not the shards whole, `loaders.plan.mixing`)."""
    stream = epoch_pieces(counts, seed=seed, epoch=epoch, shuffle=shuffle, pieces=pieces)
    n_total = int(stream.length.sum())
    if n_total == 0:
        return [], []
    layout = Layout(world_size, num_workers, batch_size, drop_last)
    start, sizes = worker_share(n_total, layout, rank=rank, worker=worker)
    return _positions_to_spans(stream, start, sum(sizes)), sizes


def shuffle_rng(seed: int, epoch: int, rank: int, worker: int) -> np.random.Generator:
    """The generator of producer `worker`'s shuffle buffer, and of nothing else (so a plan can be replayed)."""
    return generator("shuffle", seed, epoch, rank, worker)


def rank_batches(n_total: int, layout: Layout) -> int:
    """Batches each rank yields over a stream of `n_total` positions."""
    return batches_per_rank(n_total, world_size=layout.world_size, batch_size=layout.batch_size,
                            drop_last=layout.drop_last)


def rank_used(n_total: int, layout: Layout) -> int:
    """Samples each rank yields over a stream of `n_total` positions (drop_last: whole batches only)."""
    n_rank = rank_samples(n_total, world_size=layout.world_size, drop_last=layout.drop_last)
    return n_rank // layout.batch_size * layout.batch_size if layout.drop_last else n_rank


def seen_positions(stream: np.ndarray, layout: Layout, *, rank_batches_done: int, seed: int, epoch: int
                   ) -> np.ndarray:
    """The positions of `stream` (an epoch's stream positions, in order) that every rank of `layout` consumed in
    its first `rank_batches_done` batches: replays each producer's shuffle buffer over its share."""
    seen = []
    for rank in range(layout.world_size):
        for worker in range(layout.workers):
            start, sizes = worker_share(len(stream), layout, rank=rank, worker=worker)
            done = sum(sizes[:len(range(worker, rank_batches_done, layout.workers))])
            if done:
                share = stream[(start + np.arange(sum(sizes))) % len(stream)].tolist()
                rng = shuffle_rng(seed, epoch, rank, worker)
                order = itertools.chain.from_iterable(iter_shuffled(iter([share]), size=layout.shuffle_buffer,
                                                                    rng=rng))
                seen.append(np.fromiter(itertools.islice(order, done), dtype=np.int64, count=done))
    return np.unique(np.concatenate(seen)) if seen else np.zeros(0, dtype=np.int64)


def plan_remainder(counts: list[int], stream: np.ndarray, layout: Layout, *, rank: int, worker: int, seed: int,
                   epoch: int, shuffle: bool, pieces: Pieces | None = None) -> tuple[list[Span], list[int]]:
    """`plan_worker` for a resumed epoch: the share of producer `worker` of `rank` in `stream`, the positions of
    the epoch's stream not yet seen (in order), as spans whose gaps are skipped."""
    if not len(stream):
        return [], []
    start, sizes = worker_share(len(stream), layout, rank=rank, worker=worker)
    positions = stream[(start + np.arange(sum(sizes))) % len(stream)]
    runs = epoch_pieces(counts, seed=seed, epoch=epoch, shuffle=shuffle, pieces=pieces)
    return _stream_spans(runs, positions), sizes


def _stream_spans(pieces: Pieces, positions: np.ndarray) -> list[Span]:
    """Spans reading exactly `positions` (positions of the stream `pieces`), in that order."""
    if not len(positions):
        return []
    offsets = pieces.offsets
    k = np.searchsorted(offsets, positions, side="right") - 1  # index into the runs
    inner = pieces.start[k] + positions - offsets[k]
    breaks = np.flatnonzero((np.diff(k) != 0) | (np.diff(positions) <= 0)) + 1  # another shard, or a wrap
    spans = []
    for piece in np.split(np.arange(len(positions)), breaks):
        kept = inner[piece].tolist()
        lo, hi = kept[0], kept[-1] + 1
        skip = frozenset(range(lo, hi)).difference(kept) if hi - lo > len(kept) else frozenset()
        spans.append(Span(int(pieces.shard[int(k[piece[0]])]), lo, hi, skip))
    return spans


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
