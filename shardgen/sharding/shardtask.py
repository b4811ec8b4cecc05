"""The shard task: one planned range of input records → its shard(s), written by the task itself to the output.

The driver plans the build as ranges of `samples_per_shard` input records (range t is records [t·N, (t+1)·N)), a
pure function of the input order and the settings. A task receives one range: its records and their captions'
embedding rows. It preprocesses the images, packs the samples and writes each shard and its `.idx` straight to the
output (a local folder, or the object store through fsspec) under a part name of its own
(`<split>-t<range>-<piece>.part.tar`), and returns a `TaskSummary`: the parts' counts, sizes and sha256, and what
failed. No image byte goes back to the driver. The driver renames the parts to their final, contiguous names
(`<split>-NNNNNN.tar`) in range order, journals them and writes the manifest last.

Rollover: a range's samples make one shard; with `max_shard_bytes`, a new piece starts before a sample that would
push the current one past it. So a range without failures gives exactly the shard a count rollover always gave, a
range whose images all failed gives none (its failures go with the shard before it), and size rollover restarts at
each range's first record (docs/format.md). The same function runs inline, on the local processes and as a Ray
task, so the executors give identical bytes; a retried task rewrites the same parts.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import NamedTuple

import numpy as np

from ..config import BuildConfig
from ..errors import BadImage, UserError
from ..format import Sample, schema
from ..format.storage import join
from ..sources.record import ImageRecord
from ..sources.listing import Listing
from .pack import Prepared, iter_shard_batches, preprocess_records
from .writer import write_shard


class CacheFiles(NamedTuple):
    """The caption cache's files a task reads its rows from (`text.cache`): the rows, and the listing's order."""

    rows: str
    order: str


class ShardTask(NamedTuple):
    """One range of the plan: what a task needs to write its shard(s)."""

    number: int  # the range's place in the plan
    first: int  # input index of its first record
    listing: Listing  # its records (a compact slice of the build's listing)
    rows: np.ndarray | None  # its captions' embeddings in listing order, [n_captions, D] float16; None: read here
    out: str  # the output folder: a local path or a URL
    cfg: BuildConfig
    cache_files: CacheFiles | None = None  # with `rows` None: read here, from the range's first caption on
    first_caption: int = 0  # the range's first caption's index in the build's listing
    threads: int = 1  # image threads in this task (more than 1 only when the plan has fewer ranges than slots)


class TaskSummary(NamedTuple):
    """What comes back from a task: one journal entry per written part (name = its part name), in order, and the
    failures of a range that wrote nothing."""

    number: int
    input_end: int  # input index just past the range
    parts: list[dict]
    unplaced: dict[str, list[str]]  # failures when not one image of the range made it into a shard


def part_name(split: str, number: int, piece: int) -> str:
    """The name a task writes a shard under before the driver gives it its place (`train-t000003-0.part.tar`, its index `.part.idx`)."""
    return f"{split}-t{number:06d}-{piece}.part.tar"


def to_sample(rec: ImageRecord, img, rows: np.ndarray) -> Sample:
    """The sample: each field of the sample schema builds its value from the record and its products (the
    preprocessed image; the caption embeddings, row i ↔ `rec.captions[i]`)."""
    return schema.SCHEMA.build(rec, {"image": img, "embeddings": rows})


def _read_rows(task: ShardTask) -> np.ndarray:
    """The range's caption embeddings, read from the memory-mapped cache: only the rows its captions need."""
    files = task.cache_files
    order = np.load(files.order, mmap_mode="r", allow_pickle=False)
    index = np.asarray(order[task.first_caption:task.first_caption + task.listing.n_captions])
    table = np.load(files.rows, mmap_mode="r", allow_pickle=False)
    if len(index) != task.listing.n_captions or (len(index) and int(index.max()) >= len(table)):
        raise UserError(f"{files.order}: the caption cache changed under this build (its order file has no rows "
                        f"for input records {task.first}..{task.first + len(task.listing) - 1}); rerun it")
    return table[index]


def run_shard_task(task: ShardTask) -> TaskSummary:
    """Preprocess, pack and write one range's shard(s); see the module docstring."""
    cfg = task.cfg
    records = task.listing.records()
    table = task.rows if task.rows is not None else _read_rows(task)
    first = task.listing.first_caption.tolist()
    rows = [table[a:b] for a, b in zip(first, first[1:])]
    prepared = [Prepared(task.first + j, rec, res if isinstance(res, BadImage) else to_sample(rec, res, rows),
                         () if isinstance(res, BadImage) else res.conversions)
                for j, (rec, rows, res) in enumerate(zip(records, rows, preprocess_records(records, cfg,
                                                                                          threads=task.threads)))]
    end = task.first + len(records)
    parts: list[dict] = []
    unplaced: dict[str, list[str]] = {}
    for batch in iter_shard_batches(prepared, samples_per_shard=cfg.samples_per_shard,
                                    max_shard_bytes=cfg.max_shard_bytes, input_end=end):
        if not batch.samples:  # failures after the range's last sample: they go with its last part
            if parts:
                for reason, names in batch.failures.items():
                    parts[-1]["failures"].setdefault(reason, []).extend(names)
            else:
                unplaced = batch.failures
            continue
        name = part_name(cfg.dataset_split, task.number, len(parts))
        info = write_shard(join(task.out, name), batch.samples, index=cfg.dali_index)
        parts.append({**asdict(info), "input_end": batch.input_end, "failures": batch.failures,
                      "conversions": batch.conversions,
                      "n_captions": sum(len(s.meta["captions"]) for s in batch.samples)})
    if parts:
        parts[-1]["input_end"] = end
    return TaskSummary(task.number, end, parts, unplaced)
