"""`shardgen build`: one input (a COCO split, a Karpathy or Flickr split file, an image-caption table, webdataset
tars) → contiguous tar shards + manifest, resumable and byte-reproducible, whichever the executor.

`build_shards` reads like a table of contents: read the input (`sources`), make its paths absolute (tasks run in
other processes and on other nodes), check and lock the output's work folder (`outdir`), start the executor
(`executors`) and check the cluster's nodes (`probe`), embed captions once (`text.cache`), then plan the build as
ranges of input records and hand each range to a shard task (`shardtask`) that writes its own shard(s) to the
output. The driver keeps the order: it gives each finished part its place (`<split>-NNNNNN.tar`), journals it
(`journal`), and writes the manifest last (`finish`). A killed build rerun with the same config resumes after the
last journaled shard and produces identical bytes.

With `--out s3://…` the tasks write the shards straight to the store; the driver's work folder (`--staging`)
holds only the lock, the journal and the caption cache.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from ..config import BuildConfig
from ..errors import UserError
from ..format import Manifest, embeddings_cache_path, shard_name
from ..format.storage import join, redact
from ..sources.listing import Listing
from ..text.cache import CaptionEmbeddings, encode_captions, encoder_fingerprint
from .dali import write_dali_index
from .executors import Executor, Resources, TaskLost, open_executor
from .finish import assemble_manifest, write_manifest
from .inputs import SplitInput, absolute_paths, load_input
from .journal import JOURNAL_NAME, build_identity, load_journal, save_journal
from .outdir import check_out_dir, locked_cache, locked_out_dir, user_write_errors
from .outputs import Output
from .probe import check_nodes
from .shardtask import CacheFiles, ShardTask, TaskSummary, run_shard_task

__all__ = ["JOURNAL_NAME", "BuildConfig", "BuildReport", "SplitInput", "build_shards", "load_input"]

TASKS_IN_FLIGHT_PER_SLOT = 2  # ranges submitted ahead per task the executor runs at once: every slot stays busy
MAX_TASK_THREADS = 8  # image threads a task of a short plan may use on this machine


@dataclass
class BuildReport:
    out: Path | str
    manifest: Manifest
    seconds: float
    resumed_shards: int

    def summary(self) -> str:
        m = self.manifest
        rate = m.n_samples / self.seconds if self.seconds > 0 else float("inf")
        images = sum(v["count"] for v in m.failures.values() if v.get("unit", "image") == "image")
        captions = sum(v["count"] for v in m.failures.values() if v.get("unit") == "caption")
        head = (f"{m.split}: {m.n_samples} images, {m.n_captions} captions in {len(m.shards)} shards "
                f"({m.n_bytes / 1e6:.1f} MB) at {redact(str(self.out))}; {images} images skipped" +
                (f", {captions} caption rows skipped; " if captions else "; "))
        if self.resumed_shards == len(m.shards):
            return head + f"already complete: every shard was there and checked ({self.seconds:.1f} s)"
        return head + f"{rate:.0f} img/s ({self.seconds:.1f} s)" + (
            f"; resumed after {self.resumed_shards} shards" if self.resumed_shards else "")


def _resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _stderr(prefix: str) -> Callable[[str], None]:
    return lambda msg: print(f"{prefix}{msg}", file=sys.stderr)


def build_shards(cfg: BuildConfig, *, on_shard: Callable[[str], None] | None = None) -> BuildReport:
    """Build the shards of one input. Raises `UserError` on bad input before encoding anything.

    `on_shard(location)` is called as each shard gets its final name (a path or a URL)."""
    t0 = time.perf_counter()
    log = _stderr("") if cfg.progress else (lambda msg: None)
    warn = _stderr("shardgen build: warning: ")
    cfg = absolute_paths(cfg)
    split = load_input(cfg)
    records = split.records[: cfg.limit] if cfg.limit else split.records
    if not records:
        raise UserError(f"{redact(str(split.captions_file))}: no images with usable captions "
                        f"({split.report.summary()})")
    output = Output.of(cfg)
    check_out_dir(output.work, cfg.dataset_split)
    cache = Path(cfg.embeddings_cache) if cfg.embeddings_cache else \
        embeddings_cache_path(output.work, cfg.dataset_split)
    with locked_out_dir(output.work), locked_cache(cache), \
            open_executor(cfg.executor, workers=cfg.workers, address=cfg.ray_address, progress=cfg.progress) as pool:
        cache_shared = check_nodes(pool, cfg, output=output.location, cache_folder=cache.parent)
        log(f"{cfg.dataset_split}: {len(records)} images with captions in {redact(split.images)}")
        emb = _embed_captions(cfg, records, cache, output.work, pool, cache_shared=cache_shared)
        fingerprint = encoder_fingerprint(cfg.text_encoder)
        identity = build_identity(cfg, records, fingerprint)
        journal = load_journal(output, cfg.dataset_split, identity, warn=warn)
        with user_write_errors(output.work):
            shards = _write_shards(cfg, records, emb, output, journal=journal, identity=identity,
                                   on_shard=on_shard, pool=pool, cache_shared=cache_shared)
            if cfg.dali_index and not output.remote:  # resumed shards (or ones from a run without the flag)
                for entry in shards:
                    if not (output.work / entry["name"]).with_suffix(".idx").is_file():
                        write_dali_index(output.work / entry["name"])
            manifest = assemble_manifest(cfg, shards=shards, caption_problems=split.report.problems,
                                         records=records, emb=emb, source=split.source,
                                         provenance=split.provenance, fingerprint=fingerprint)
            write_manifest(output, manifest)
    return BuildReport(out=output.location, manifest=manifest, seconds=time.perf_counter() - t0,
                       resumed_shards=len(journal))


def _embed_captions(cfg: BuildConfig, records: Listing, cache: Path, work: Path, pool: Executor | None = None, *,
                    cache_shared: bool = True) -> CaptionEmbeddings:
    """Every caption's embedding, from the cache where possible; the cache is rewritten when it grew (this
    listing's order goes to `work` where the cache's folder is read-only). On a cluster the missing chunks are
    its tasks, which write them to the cache folder themselves where every node sees it (`cache_shared`)."""
    device, submit = _resolve_device(cfg.device), None
    if pool is not None and not pool.runs_here:  # the chunks become the cluster's tasks, on its GPUs if it has any
        device = "cuda" if pool.gpus else "cpu"
        submit = partial(_submit_encoding, pool, Resources(gpus=1 if pool.gpus else 0))
    with user_write_errors(cache.parent, only_under=True):  # chunks are written as encoding goes (`embeddings`)
        emb, _ = encode_captions(records, text_encoder=cfg.text_encoder, cache=cache, device=device,
                                 batch_size=cfg.encode_batch_size, progress=cfg.progress, submit=submit,
                                 tasks_write=cache_shared, scratch=work)
    return emb


def _submit_encoding(pool: Executor, resources: Resources, fn: Callable, *args):
    return pool.submit(fn, *args, resources=resources)


def iter_tasks(cfg: BuildConfig, records: Listing, emb: CaptionEmbeddings, out: str, *, start: int,
               cache_shared: bool = True, slots: int = 1) -> Iterator[ShardTask]:
    """The plan after `start`: ranges of `samples_per_shard` input records (a slice of the listing each), whose
    tasks read their captions' rows from the cache's files where they see them (`cache_shared`), else receive
    them. A plan of fewer ranges than `slots` gives each task the idle slots as image threads."""
    n = cfg.samples_per_shard
    files = CacheFiles(str(emb.rows_file), str(emb.order_file)) if cache_shared and emb.order_file is not None \
        else None
    threads = max(1, min(MAX_TASK_THREADS, slots // max(1, -(-(len(records) - start) // n))))
    for first in range(start, len(records), n):
        c0, c1 = int(records.first_caption[first]), int(records.first_caption[min(first + n, len(records))])
        yield ShardTask(first // n, first, records[first:first + n], None if files else emb.rows(c0, c1), out, cfg,
                        files, c0, threads)


def _in_order(pool: Executor, tasks: Iterator[ShardTask]) -> Iterator[tuple[ShardTask, TaskSummary]]:
    """Keep about two tasks per slot submitted and yield their summaries in plan order. A task whose process or
    node died (after the executor's own retries) is one line naming its range."""
    pending: deque = deque()
    ahead = TASKS_IN_FLIGHT_PER_SLOT * pool.capacity
    for task in tasks:
        pending.append((task, pool.submit(run_shard_task, task)))
        while len(pending) >= ahead:
            yield _result(*pending.popleft())
    while pending:
        yield _result(*pending.popleft())


def _result(task: ShardTask, future) -> tuple[ShardTask, TaskSummary]:
    try:
        return task, future.result()
    except TaskLost as exc:
        last = task.first + len(task.listing)
        raise UserError(f"the task writing input records {task.first}..{last - 1} was lost ({exc}); the shards "
                        "before it are journaled: rerun the same command to resume") from exc


def _write_shards(cfg: BuildConfig, records: Listing, emb: CaptionEmbeddings, output: Output, *,
                  journal: list[dict], identity: dict, on_shard: Callable[[str], None] | None,
                  pool: Executor, cache_shared: bool = True) -> list[dict]:
    """Write the shards after the journaled ones through shard tasks; returns every shard's journal entry."""
    from tqdm.auto import tqdm

    shards = list(journal)
    unplaced: dict[str, list[str]] = {}  # failures of ranges before the first shard that wrote anything
    start = journal[-1]["input_end"] if journal else 0
    output.remove_unjournaled(cfg.dataset_split, kept={e["name"] for e in shards})
    bar = tqdm(total=len(records), initial=start, desc=f"pack {cfg.dataset_split}", unit="img",
               disable=not cfg.progress)
    tasks = iter_tasks(cfg, records, emb, output.location, start=start, cache_shared=cache_shared,
                       slots=pool.capacity if pool.runs_here else 1)
    for task, summary in _in_order(pool, tasks):
        bar.update(len(task.listing))
        if not summary.parts:  # every image of the range failed
            if shards:
                for reason, names in summary.unplaced.items():
                    shards[-1]["failures"].setdefault(reason, []).extend(names)
                shards[-1]["input_end"] = summary.input_end
                save_journal(output.work, identity, shards)
            else:
                for reason, names in summary.unplaced.items():
                    unplaced.setdefault(reason, []).extend(names)
            continue
        for part in summary.parts:
            if unplaced:
                part["failures"] = _merged(unplaced, part["failures"])
                unplaced = {}
            name = shard_name(cfg.dataset_split, len(shards))
            output.finalize(part["name"], name, index=cfg.dali_index)
            shards.append({**part, "name": name})
            save_journal(output.work, identity, shards)
            if on_shard is not None:
                on_shard(join(output.location, name))
    bar.close()
    if not shards:
        counts = ", ".join(f"{len(names)} {reason}" for reason, names in sorted(unplaced.items()))
        where = cfg.coco_root or cfg.image_root or cfg.webdataset or cfg.captions
        raise UserError(f"no usable images in {redact(str(where))} for split {cfg.dataset_split}: every image "
                        f"failed ({counts})")
    return shards


def _merged(first: dict[str, list[str]], then: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {reason: list(names) for reason, names in first.items()}
    for reason, names in then.items():
        out.setdefault(reason, []).extend(names)
    return out
