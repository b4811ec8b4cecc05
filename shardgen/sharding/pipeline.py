"""`shardgen build`: one COCO split (2014, 2017 or a Karpathy split), a Flickr split file, an image-caption table or
webdataset tars → contiguous tar shards + manifest, resumable and byte-reproducible.

`build_shards` reads like a table of contents: read captions (`sources`: coco, karpathy, table, webdataset), check
and lock the output folder (`outdir`), embed captions once (`text.cache`, cached), preprocess images on N processes
or Ray tasks (`cluster`) in input order and roll shards over by count or size (`pack`), write each shard (`writer`)
and journal it (`journal`), then assemble the manifest and write the indexes, manifest last (`finish`). A killed
build rerun with the same config resumes after the last journaled shard and produces identical bytes, whichever
the executor."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .finish import assemble_manifest, write_manifest
from ..sources.coco import CaptionReport, CocoImage, load_split
from ..config import BuildConfig
from ..text.cache import (
    CaptionEmbeddings,
    encode_captions,
    encoder_fingerprint,
    save_cache,
)
from ..errors import UserError
from ..format import Manifest, embeddings_cache_path, shard_name
from ..format.coco_folders import SPLIT_FOLDERS, find_split
from .journal import JOURNAL_NAME, build_identity, load_journal, save_journal
from ..sources.karpathy import load_flickr, load_karpathy
from ..sources.table import load_table
from ..sources.webdataset import load_webdataset
from ..sources.coco import find_remote_split
from ..format.storage import is_remote
from .outdir import check_out_dir, locked_out_dir, user_write_errors
from .pack import CHUNK_IMAGES, iter_prepared, iter_shard_batches
from .dali import write_dali_index
from .writer import write_shard

__all__ = ["JOURNAL_NAME", "BuildConfig", "BuildReport", "build_shards"]


@dataclass
class BuildReport:
    out: Path
    manifest: Manifest
    seconds: float
    resumed_shards: int

    def summary(self) -> str:
        m = self.manifest
        rate = m.n_samples / self.seconds if self.seconds > 0 else float("inf")
        failed = sum(v["count"] for v in m.failures.values())
        head = (f"{m.split}: {m.n_samples} images, {m.n_captions} captions in {len(m.shards)} shards "
                f"({m.n_bytes / 1e6:.1f} MB) at {self.out}; {failed} skipped; ")
        if self.resumed_shards == len(m.shards):
            return head + f"already complete: every shard was there and checked ({self.seconds:.1f} s)"
        return head + f"{rate:.0f} img/s ({self.seconds:.1f} s)" + (
            f"; resumed after {self.resumed_shards} shards" if self.resumed_shards else "")


class SplitInput(NamedTuple):
    """What a build reads: the split's images and captions, what was skipped, and where they came from."""

    records: list[CocoImage]
    report: CaptionReport
    source: dict[str, Any] | None  # the manifest's `source`; None for COCO 2014's own train/val (as always)
    captions_file: Path | str
    images: str  # the image folder(s), for the log


def read_input(cfg: BuildConfig) -> SplitInput:
    """The split's images, sorted by id: a COCO split (2014 or 2017) from its captions file (a folder or a URL), a
    Karpathy split from its split file with the images from the 2014 folders, a Flickr split file's images under
    --image-root, or an image-caption table's. Raises UserError on bad input."""
    if cfg.webdataset is not None:
        wds = load_webdataset(cfg.webdataset)
        return SplitInput(wds.records, wds.report, wds.source, cfg.webdataset, cfg.webdataset)
    if cfg.captions is not None:
        table = load_table(cfg.captions, cfg.image_root, cfg.split)
        return SplitInput(table.records, table.report, table.source, cfg.captions, str(cfg.image_root))
    if cfg.image_root is not None:
        kp = load_flickr(cfg.karpathy, cfg.image_root, cfg.split)
        return SplitInput(kp.records, kp.report, kp.source, Path(cfg.karpathy), str(cfg.image_root))
    if is_remote(str(cfg.coco_root)):
        if cfg.karpathy is not None:
            raise UserError("--karpathy with a --coco-root URL is not supported; use a local copy of the 2014 "
                            "folders, or build val/train from the URL")
        layout = find_remote_split(str(cfg.coco_root).rstrip("/"), cfg.split)
        records, report = load_split(layout)
        return SplitInput(records, report, _coco_source(cfg.split, layout), layout.annotations,
                          str(layout.images_dir))
    if cfg.karpathy is not None:
        kp = load_karpathy(cfg.karpathy, cfg.coco_root, cfg.split)
        folders = sorted({str(r.path.parent) for r in kp.records})
        return SplitInput(kp.records, kp.report, kp.source, Path(cfg.karpathy), " and ".join(folders) or "-")
    layout = find_split(cfg.coco_root, cfg.split)
    records, report = load_split(layout)
    return SplitInput(records, report, _coco_source(cfg.split, layout), layout.annotations, str(layout.images_dir))


def _coco_source(split: str, layout) -> dict[str, Any] | None:
    """The manifest's `source` of a COCO split: None for 2014's own train/val (as always), else year and file."""
    year = SPLIT_FOLDERS[split][-4:]
    return None if year == "2014" else {"dataset": f"coco{year}", "split": split,
                                        "captions": str(layout.annotations).rsplit("/", 1)[-1]}


def _resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _stderr(prefix: str) -> Callable[[str], None]:
    return lambda msg: print(f"{prefix}{msg}", file=sys.stderr)


def build_shards(cfg: BuildConfig, *, on_shard: Callable[[Path], None] | None = None) -> BuildReport:
    """Build the shards for one split. Raises `UserError` on bad input before encoding anything.

    `on_shard(path)` is called as each shard is finished (e.g. to upload it while the build goes on)."""
    t0 = time.perf_counter()
    log = _stderr("") if cfg.progress else (lambda msg: None)
    warn = _stderr("shardgen build: warning: ")
    split = read_input(cfg)
    records = split.records[: cfg.limit] if cfg.limit else split.records
    if not records:
        raise UserError(f"{split.captions_file}: no images with usable captions")
    out = Path(cfg.out)
    check_out_dir(out, cfg.dataset_split)
    with locked_out_dir(out), _executor(cfg) as pool:
        log(f"{cfg.dataset_split}: {len(records)} images with captions in {split.images}")
        emb = _embed_captions(cfg, records, out, pool)
        identity = build_identity(cfg, records, encoder_fingerprint(cfg.text_encoder))
        journal = load_journal(out, cfg.dataset_split, identity, warn=warn)
        with user_write_errors(out):
            shards = _write_shards(cfg, records, emb, out, journal=journal, identity=identity,
                                   on_shard=on_shard, pool=pool)
            if cfg.dali_index:  # after packing, so resumed shards (or ones from a run without the flag) get one too
                for entry in shards:
                    if not (out / entry["name"]).with_suffix(".idx").is_file():
                        write_dali_index(out / entry["name"])
            manifest = assemble_manifest(cfg, shards=shards, caption_problems=split.report.problems,
                                         records=records, emb=emb, source=split.source)
            write_manifest(out, manifest)
    return BuildReport(out=out, manifest=manifest, seconds=time.perf_counter() - t0, resumed_shards=len(journal))


@contextmanager
def _executor(cfg: BuildConfig) -> Iterator[Any]:
    """None for `--executor local` (`pack` runs its own processes), a `cluster.RayPool` for `ray`."""
    if cfg.executor == "local":
        yield None
        return
    from .cluster import ray_pool

    with ray_pool(address=cfg.ray_address, workers=cfg.workers) as pool:
        yield pool


def _chunk(cfg: BuildConfig, n_records: int, pool: Any) -> int:
    """Images per task: locally a small chunk; on Ray one shard's worth of input (the unit of work and of loss),
    smaller only when that would leave the cluster's CPUs idle."""
    if pool is None:
        return CHUNK_IMAGES
    return max(CHUNK_IMAGES, min(cfg.samples_per_shard, -(-n_records // (2 * pool.slots))))


def _embed_captions(cfg: BuildConfig, records: list[CocoImage], out: Path, pool: Any = None) -> CaptionEmbeddings:
    """Every caption's embedding, from the cache where possible; the cache is rewritten when it grew."""
    cache = Path(cfg.embeddings_cache) if cfg.embeddings_cache else embeddings_cache_path(out, cfg.dataset_split)
    with user_write_errors(cache.parent, only_under=True):  # chunks are written as encoding goes (`embeddings`)
        emb, dirty = encode_captions(records, text_encoder=cfg.text_encoder, cache=cache,
                                     device=_resolve_device(cfg.device), batch_size=cfg.encode_batch_size,
                                     progress=cfg.progress, pool=pool)
        if dirty:
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_cache(cache, emb, records, encoder_fingerprint(cfg.text_encoder))
    return emb


def _remove_unjournaled(out: Path, split: str, kept: set[str]) -> None:
    """Shards, indexes and temporary files past the journal come from a killed run; they are rewritten."""
    for stale in [*out.glob(f"{split}-*.tar*"), *out.glob(f"{split}-*.idx*")]:
        if stale.name.replace(".idx", ".tar") not in kept:
            stale.unlink()


def _write_shards(cfg: BuildConfig, records: list[CocoImage], emb: CaptionEmbeddings, out: Path, *,
                  journal: list[dict], identity: dict, on_shard: Callable[[Path], None] | None,
                  pool: Any = None) -> list[dict]:
    """Preprocess and write the shards after the journaled ones; returns every shard's journal entry."""
    from tqdm.auto import tqdm

    shards = list(journal)
    unplaced: dict[str, list[str]] = {}  # failures when not one image made it into a shard
    start = journal[-1]["input_end"] if journal else 0
    _remove_unjournaled(out, cfg.dataset_split, kept={e["name"] for e in shards})
    prepared = tqdm(iter_prepared(records, emb, cfg=cfg, start=start, workers=cfg.workers, pool=pool,
                                  chunk=_chunk(cfg, len(records) - start, pool)), total=len(records),
                    initial=start, desc=f"pack {cfg.dataset_split}", unit="img", disable=not cfg.progress)
    for batch in iter_shard_batches(prepared, samples_per_shard=cfg.samples_per_shard,
                                    max_shard_bytes=cfg.max_shard_bytes, input_end=len(records)):
        if batch.samples:
            info = write_shard(out / shard_name(cfg.dataset_split, len(shards)), batch.samples,
                               index=cfg.dali_index)
            shards.append({**asdict(info), "input_end": batch.input_end, "failures": batch.failures,
                           "conversions": batch.conversions,
                           "n_captions": sum(len(s.meta["captions"]) for s in batch.samples)})
        elif shards:  # trailing failures after the last full shard: attribute them to it
            for reason, names in batch.failures.items():
                shards[-1]["failures"].setdefault(reason, []).extend(names)
            shards[-1]["input_end"] = batch.input_end
        else:
            unplaced = batch.failures
            continue
        save_journal(out, identity, shards)
        if batch.samples and on_shard is not None:
            on_shard(out / shards[-1]["name"])
    if not shards:
        counts = ", ".join(f"{len(names)} {reason}" for reason, names in sorted(unplaced.items()))
        where = cfg.coco_root or cfg.image_root or cfg.webdataset
        raise UserError(f"no usable images in {where} for split {cfg.dataset_split}: every image failed "
                        f"({counts})")
    return shards
