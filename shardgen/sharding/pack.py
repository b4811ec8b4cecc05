"""The packing stages: CocoImage records → preprocessed `Sample`s in input order (on N processes) → shard batches.

`iter_prepared` yields one `Prepared` per record strictly in input order whatever the worker count, with a bounded
number of chunks in flight, so memory stays flat and the output is a pure function of the input. `iter_shard_batches`
groups them into shards by count and size; both can be driven with plain lists in a test.

Image processes die with the build: each asks the kernel (Linux `PR_SET_PDEATHSIG`) for SIGKILL when the build
process goes, so a build killed by the OOM killer or `kill -9` leaves no ~500 MB orphans behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from ..sources.coco import CocoImage
from ..config import BuildConfig
from ..text.cache import CaptionEmbeddings
from ..errors import BadImage
from ..format import Sample, schema
from .images import preprocess_image

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CHUNK_IMAGES = 32  # images per task sent to an image process
CHUNKS_IN_FLIGHT_PER_WORKER = 4  # enough to keep every process busy, few enough to keep memory flat


class Prepared(NamedTuple):
    """One input record after preprocessing: a ready `Sample`, or the `BadImage` that stopped it."""

    index: int  # position in the input list
    record: CocoImage
    outcome: Sample | BadImage
    conversions: tuple[str, ...]  # fixes applied to the image (e.g. "cmyk_to_rgb"), counted in the manifest


class ShardBatch(NamedTuple):
    """What one shard holds, and the input it accounts for. `samples` is empty only for trailing failures after
    the last full shard, which the build attributes to that shard."""

    samples: list[Sample]
    input_end: int  # input index just past the last record this batch accounts for
    failures: dict[str, list[str]]  # reason → file names
    conversions: dict[str, list[str]]  # conversion → file names


def _die_with_parent(parent_pid: int) -> None:
    """Image-process initializer: SIGKILL this process when the build process dies (Linux; elsewhere a no-op).

    The signal follows the thread that started the process; the build starts its pool from its own thread."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)


def image_folder(rec: CocoImage) -> Path | None:
    """The folder `rec.file_name` is relative to (its image folder): what a link in it may not lead out of. None
    for an image that is no local file (a URL, a member of a tar)."""
    if not isinstance(rec.path, Path):
        return None
    return rec.path.parents[len(PurePosixPath(rec.file_name).parts) - 1]


def _preprocess_chunk(records: list[CocoImage], cfg: BuildConfig) -> list:
    out = []
    for rec in records:
        try:
            out.append(preprocess_image(rec.path, size=cfg.image_size, crop=cfg.crop, quality=cfg.jpeg_quality,
                                        draft=cfg.draft, max_pixels=cfg.max_image_pixels, root=image_folder(rec)))
        except BadImage as exc:
            out.append(exc)
    return out


def _to_sample(rec: CocoImage, img, emb: CaptionEmbeddings) -> Sample:
    """The sample: each field of the sample schema builds its value from the record and what was made of it."""
    return schema.SCHEMA.build(rec, {"image": img, "embeddings": emb})


def iter_prepared(records: list[CocoImage], emb: CaptionEmbeddings, *, cfg: BuildConfig, start: int = 0,
                  workers: int = 1, chunk: int = CHUNK_IMAGES, pool=None) -> Iterator[Prepared]:
    """Preprocess records[start:] and yield them in input order: here (`workers` 1), on `workers` processes, or
    on `pool` (anything with `submit(fn, *args).result()` and `in_flight`, e.g. `cluster.RayPool`)."""
    chunks = [(i, records[i:i + chunk]) for i in range(start, len(records), chunk)]

    def emit(first: int, recs: list[CocoImage], results: list) -> Iterator[Prepared]:
        for j, (rec, res) in enumerate(zip(recs, results)):
            if isinstance(res, BadImage):
                yield Prepared(first + j, rec, res, ())
            else:
                yield Prepared(first + j, rec, _to_sample(rec, res, emb), res.conversions)

    if pool is not None:
        yield from _in_order(pool, chunks, cfg, emit, in_flight=pool.in_flight)
        return
    if workers <= 1:
        for first, recs in chunks:
            yield from emit(first, recs, _preprocess_chunk(recs, cfg))
        return
    with ProcessPoolExecutor(workers, initializer=_die_with_parent, initargs=(os.getpid(),)) as local:
        yield from _in_order(local, chunks, cfg, emit, in_flight=CHUNKS_IN_FLIGHT_PER_WORKER * workers)


def _in_order(pool, chunks: list, cfg: BuildConfig, emit, *, in_flight: int) -> Iterator[Prepared]:
    """Keep `in_flight` chunks submitted to `pool` and emit their results in input order."""
    pending: deque = deque()
    todo = iter(chunks)
    for first, recs in todo:
        pending.append((first, recs, pool.submit(_preprocess_chunk, recs, cfg)))
        if len(pending) >= in_flight:
            break
    while pending:
        first, recs, fut = pending.popleft()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append((nxt[0], nxt[1], pool.submit(_preprocess_chunk, nxt[1], cfg)))
        yield from emit(first, recs, fut.result())


def iter_shard_batches(prepared: Iterable[Prepared], *, samples_per_shard: int, max_shard_bytes: int,
                       input_end: int) -> Iterator[ShardBatch]:
    """Group prepared records into shards: a new shard starts after `samples_per_shard` samples, or before a sample
    that would push the shard past `max_shard_bytes`. Failures go with the shard that follows them."""
    samples: list[Sample] = []
    fails: dict[str, list[str]] = defaultdict(list)
    convs: dict[str, list[str]] = defaultdict(list)
    size = 0
    for item in prepared:
        if isinstance(item.outcome, BadImage):
            fails[item.outcome.reason].append(item.record.file_name)
            continue
        if samples and size + item.outcome.n_bytes > max_shard_bytes:
            yield ShardBatch(samples, item.index, dict(fails), dict(convs))
            samples, fails, convs, size = [], defaultdict(list), defaultdict(list), 0
        for note in item.conversions:
            convs[note].append(item.record.file_name)
        samples.append(item.outcome)
        size += item.outcome.n_bytes
        if len(samples) == samples_per_shard:
            yield ShardBatch(samples, item.index + 1, dict(fails), dict(convs))
            samples, fails, convs, size = [], defaultdict(list), defaultdict(list), 0
    if samples or fails:
        yield ShardBatch(samples, input_end, dict(fails), dict(convs))
