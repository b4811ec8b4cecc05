"""Weighted mixing of several shard sets: which samples of which source an epoch's stream holds, and in what
order, as a pure function of (counts, quotas, seed, epoch), so the plan's exact epochs, rank and worker shares and
elastic resume work on a mixed epoch as on one set (MosaicML streaming's `Stream(proportion=...)`, litdata's
`CombinedStreamingDataset(weights=...)`).

An epoch of N samples takes `quotas[i]` = round(wᵢ·N) of them from source i (largest remainders, so they sum to
N and each is within 1 of round(wᵢ·N)). Each source has a stream of its own: its epochs, each its shards in an
order shuffled by (seed, own epoch, source), one after the other; mixed epoch e takes positions
[e·qᵢ, (e+1)·qᵢ) of it, so a source shorter than its share cycles and its own shuffle continues across mixed
epochs. Each source's draw is cut into chunks of `chunk_size(N)` consecutive samples (one read each), and the
chunks of all sources are interleaved evenly (chunk j of source i at (j + uᵢ)/mᵢ, uᵢ drawn per epoch), so any
contiguous part of the stream, which is what a rank's worker reads, holds the sources in proportion. The result
is a `plan.Pieces`: the stream as runs of consecutive samples of one shard.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .ranks import Pieces
from .seeds import generator

MIN_CHUNK = 32  # samples read in one go from a source (an open, a seek through the shard's index)
MAX_CHUNKS = 1 << 16  # chunks per epoch: larger epochs read larger chunks (the piece list stays small)


def quotas(weights: list[float], n: int) -> tuple[int, ...]:
    """Samples per epoch from each source: `weights` (any positive scale) times `n`, rounded by largest
    remainders so they sum to `n`."""
    total = math.fsum(weights)
    exact = [w / total * n for w in weights]
    base = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (base[i] - exact[i], i))
    for i in by_remainder[:n - sum(base)]:
        base[i] += 1
    return tuple(base)


def chunk_size(n: int) -> int:
    """Samples per chunk in an epoch of `n`: a function of `n` alone, so every layout plans the same stream."""
    return max(MIN_CHUNK, -(-n // MAX_CHUNKS))


def _own_order(n_shards: int, *, seed: int, own_epoch: int, source: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n_shards)
    return generator("source_order", seed, own_epoch, source).permutation(n_shards)


def _source_draw(shards: list[int], counts: list[int], *, first: int, n: int, seed: int, source: int,
                 shuffle: bool) -> list[tuple[int, int, int]]:
    """(shard, start, length) runs of positions [first, first + n) of a source's own stream (its shards `shards`
    with `counts`, own epoch after own epoch)."""
    total = sum(counts)
    if total == 0:
        raise ValueError(f"source {source} holds no samples")
    runs: list[tuple[int, int, int]] = []
    pos, left = first, n
    while left > 0:
        own_epoch, inner = divmod(pos, total)
        order = _own_order(len(shards), seed=seed, own_epoch=own_epoch, source=source, shuffle=shuffle)
        offset = 0
        for k in order.tolist():
            count = counts[k]
            if left == 0:
                break
            if offset + count <= inner:
                offset += count
                continue
            lo = max(inner - offset, 0)
            take = min(count - lo, left)
            if take:
                runs.append((shards[k], lo, take))
            left -= take
            pos += take
            offset += count
    return runs


def _chunks(runs: list[tuple[int, int, int]], size: int) -> list[list[tuple[int, int, int]]]:
    """`runs` cut into consecutive chunks of `size` samples (the last one shorter)."""
    chunks: list[list[tuple[int, int, int]]] = [[]]
    room = size
    for shard, start, length in runs:
        while length:
            if room == 0:
                chunks.append([])
                room = size
            take = min(room, length)
            chunks[-1].append((shard, start, take))
            start, length, room = start + take, length - take, room - take
    return chunks


@functools.lru_cache(maxsize=4)  # an epoch's pieces are planned once per process, not once per producer
def mixed_pieces(counts: tuple[int, ...], shard_source: tuple[int, ...], source_quotas: tuple[int, ...], *,
                 seed: int, epoch: int, shuffle: bool) -> Pieces:
    """The stream of mixed epoch `epoch`: `source_quotas[i]` samples of source i (the shards whose
    `shard_source` is i), chunked and interleaved (module docstring)."""
    size = chunk_size(sum(source_quotas))
    offsets = generator("mix", seed, epoch).random(len(source_quotas))
    keyed: list[tuple[float, int, list]] = []
    for source, quota in enumerate(source_quotas):
        if quota == 0:
            continue
        shards = [k for k, s in enumerate(shard_source) if s == source]
        runs = _source_draw(shards, [counts[k] for k in shards], first=epoch * quota, n=quota, seed=seed,
                            source=source, shuffle=shuffle)
        chunks = _chunks(runs, size)
        keyed += [((j + offsets[source]) / len(chunks), source, chunk) for j, chunk in enumerate(chunks)]
    keyed.sort(key=lambda item: (item[0], item[1]))
    table = np.array([run for _, _, chunk in keyed for run in chunk], dtype=np.int64).reshape(-1, 3)
    return Pieces(table[:, 0], table[:, 1], table[:, 2])
