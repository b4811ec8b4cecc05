"""The packing stages: input records → preprocessed images (`preprocess_records`) → shard batches
(`iter_shard_batches`), both plain functions a test drives with lists. A shard task (`shardtask`) runs them on one
planned range of records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from ..sources.record import ImageRecord
from ..config import BuildConfig
from ..errors import BadImage
from ..format import Sample
from .images import ImageResult, preprocess_image


class Prepared(NamedTuple):
    """One input record after preprocessing: a ready `Sample`, or the `BadImage` that stopped it."""

    index: int  # position in the input list
    record: ImageRecord
    outcome: Sample | BadImage
    conversions: tuple[str, ...]  # fixes applied to the image (e.g. "cmyk_to_rgb"), counted in the manifest


class ShardBatch(NamedTuple):
    """What one shard holds, and the input it accounts for. `samples` is empty only for trailing failures after
    the last full shard, which the build attributes to that shard."""

    samples: list[Sample]
    input_end: int  # input index just past the last record this batch accounts for
    failures: dict[str, list[str]]  # reason → file names
    conversions: dict[str, list[str]]  # conversion → file names


def image_folder(rec: ImageRecord) -> Path | None:
    """The folder `rec.file_name` is relative to (its image folder): what a link in it may not lead out of. None
    for an image that is no local file (a URL, a member of a tar)."""
    if not isinstance(rec.path, Path):
        return None
    return rec.path.parents[len(PurePosixPath(rec.file_name).parts) - 1]


def preprocess_records(records: list[ImageRecord], cfg: BuildConfig, *, threads: int = 1
                       ) -> list[ImageResult | BadImage]:
    """Each record's preprocessed image, or the `BadImage` that stopped it (counted by the build, never raised),
    in order. `threads` > 1 runs them on threads (Pillow's decode, resize and encode release the GIL): for a plan
    with fewer ranges than the executor has slots, where one task per range would leave CPUs idle."""
    def one(rec: ImageRecord) -> ImageResult | BadImage:
        try:
            return preprocess_image(rec.path, size=cfg.image_size, crop=cfg.crop, quality=cfg.jpeg_quality,
                                    draft=cfg.draft, max_pixels=cfg.max_image_pixels, root=image_folder(rec))
        except BadImage as exc:
            return exc

    if threads <= 1:
        return [one(rec) for rec in records]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, records))


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
