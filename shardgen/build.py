"""`shardgen build`: one COCO split → contiguous tar shards + manifest, resumable and byte-reproducible.

Reads like a table of contents: find the layout, read captions, embed captions (cached), preprocess images on N
processes in input order, roll shards over by count or size, journal each finished shard, write the manifest
and the open_clip/wids indexes last. A killed build rerun with the same config resumes after the last journaled
shard and produces identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .coco import load_split
from .config import BuildConfig
from .embeddings import encode_captions, encoder_fingerprint, save_cache
from .errors import UserError
from .export import write_dali_index
from .format import (
    EMBED_DIM,
    EMBED_DTYPE,
    MANIFEST_NAME,
    SIZES_NAME,
    WIDS_INDEX_NAME,
    Manifest,
    ShardInfo,
    embeddings_cache_path,
    shard_name,
    sizes_json,
    wids_index_json,
)
from .format.layout import find_split
from .pack import iter_samples
from .writer import Sample, sha256_file, write_shard, write_text_atomic

JOURNAL_NAME = ".shardgen-journal.json"
MAX_LISTED_FILES = 1000  # per failure reason in the manifest; counts are always complete


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
        return (f"{m.split}: {m.n_samples} images, {m.n_captions} captions in {len(m.shards)} shards "
                f"({m.n_bytes / 1e6:.1f} MB) at {self.out}; {failed} skipped; "
                f"{rate:.0f} img/s ({self.seconds:.1f} s)" + (f"; resumed after {self.resumed_shards} shards"
                                                               if self.resumed_shards else ""))


def _resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _config_hash(cfg: BuildConfig, records, fingerprint: str) -> str:
    h = hashlib.sha256(json.dumps({
        "split": cfg.split, "encoder": fingerprint, "preprocess": cfg.preprocess_record(),
        "samples_per_shard": cfg.samples_per_shard, "max_shard_bytes": cfg.max_shard_bytes,
    }, sort_keys=True).encode())
    for r in records:
        h.update(f"{r.image_id}\t{r.file_name}\t{chr(31).join(r.captions)}\n".encode())
    return h.hexdigest()


def _load_journal(out: Path, config_hash: str) -> list[dict]:
    """Finished shards from an earlier (possibly killed) run; stops at the first one missing or altered on disk."""
    path = out / JOURNAL_NAME
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if data.get("config_hash") != config_hash:
        raise UserError(f"{out} holds a build with other inputs or settings; use a new --out or delete it")
    done = []
    for entry in data["shards"]:
        shard = out / entry["name"]
        if not shard.is_file() or shard.stat().st_size != entry["n_bytes"] or sha256_file(shard) != entry["sha256"]:
            break
        done.append(entry)
    return done


def _check_out_dir(out: Path, split: str) -> None:
    manifest = out / MANIFEST_NAME
    if manifest.is_file():
        other = json.loads(manifest.read_text()).get("split")
        if other != split:
            raise UserError(f"{out} already holds the {other!r} split; use one --out per split "
                            f"(e.g. shards/{split})")


def _merge_problems(total: dict, reason: str, name: str) -> None:
    entry = total.setdefault(reason, {"count": 0, "files": []})
    entry["count"] += 1
    if len(entry["files"]) < MAX_LISTED_FILES:
        entry["files"].append(name)


def build_shards(cfg: BuildConfig, *, on_shard: Callable[[Path], None] | None = None) -> BuildReport:
    """Build the shards for one split. Raises `UserError` on bad input before writing anything.

    `on_shard(path)` is called as each shard is finished (e.g. to upload it while the build goes on)."""
    t0 = time.perf_counter()
    log = (lambda msg: print(msg, file=sys.stderr)) if cfg.progress else (lambda msg: None)
    layout = find_split(cfg.coco_root, cfg.split)
    records, report = load_split(layout)
    records = records[: cfg.limit] if cfg.limit else records
    if not records:
        raise UserError(f"{layout.annotations}: no images with captions")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir():
        _check_out_dir(out, cfg.split)
    log(f"{cfg.split}: {len(records)} images with captions in {layout.images_dir}")

    cache = Path(cfg.embeddings_cache) if cfg.embeddings_cache else embeddings_cache_path(out, cfg.split)
    emb, dirty = encode_captions(records, text_encoder=cfg.text_encoder, cache=cache,
                                 device=_resolve_device(cfg.device), batch_size=cfg.encode_batch_size,
                                 progress=cfg.progress)
    out.mkdir(parents=True, exist_ok=True)
    if dirty:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_cache(cache, emb, records, encoder_fingerprint(cfg.text_encoder))

    config_hash = _config_hash(cfg, records, encoder_fingerprint(cfg.text_encoder))
    journal = _load_journal(out, config_hash)
    shards = _pack(cfg, records, emb, out, journal, config_hash, on_shard)

    failures: dict[str, dict] = {}
    conversions: dict[str, dict] = {}
    for reason, names in sorted(report.problems.items()):
        for name in names:
            _merge_problems(failures, reason, name)
    if cfg.dali_index:  # after packing, so resumed shards (or ones from a run without the flag) get one too
        for entry in shards:
            if not (out / entry["name"]).with_suffix(".idx").is_file():
                write_dali_index(out / entry["name"])
    for entry in shards:
        for reason, names in entry["failures"].items():
            for name in names:
                _merge_problems(failures, reason, name)
        for reason, names in entry["conversions"].items():
            for name in names:
                _merge_problems(conversions, reason, name)
    truncated = set(emb.truncated)
    for rec in records:
        for cap in rec.captions:
            if cap in truncated:
                _merge_problems(conversions, "caption_truncated_to_77_tokens", rec.file_name)

    manifest = Manifest(
        split=cfg.split,
        text_encoder={"name": cfg.text_encoder, "random_init": emb.random_init,
                      "semantic": not emb.random_init, "output": "text_embeds (projected, EOS-pooled)",
                      "embed_dim": EMBED_DIM, "dtype": EMBED_DTYPE, "l2_normalized": True},
        preprocess=cfg.preprocess_record(),
        shards=[ShardInfo(**{k: e[k] for k in ("name", "n_samples", "n_bytes", "sha256")}) for e in shards],
        failures=dict(sorted(failures.items())), conversions=dict(sorted(conversions.items())),
        n_captions=sum(e["n_captions"] for e in shards),
    )
    write_text_atomic(out / SIZES_NAME, sizes_json(manifest))
    write_text_atomic(out / WIDS_INDEX_NAME, wids_index_json(manifest))
    write_text_atomic(out / MANIFEST_NAME, manifest.to_json())  # last: readers trust what it lists
    return BuildReport(out=out, manifest=manifest, seconds=time.perf_counter() - t0, resumed_shards=len(journal))


def _pack(cfg: BuildConfig, records, emb, out: Path, journal: list[dict], config_hash: str,
          on_shard: Callable[[Path], None] | None = None) -> list[dict]:
    """Preprocess and write shards after the journaled ones; returns every shard's journal entry."""
    from tqdm.auto import tqdm

    shards = list(journal)
    start = journal[-1]["input_end"] if journal else 0
    kept = {e["name"] for e in shards}
    for stale in [*out.glob(f"{cfg.split}-*.tar*"), *out.glob(f"{cfg.split}-*.idx*")]:
        if stale.name.replace(".idx", ".tar") not in kept:  # past the journal: from a killed run, rewritten below
            stale.unlink()

    def save_journal() -> None:
        write_text_atomic(out / JOURNAL_NAME, json.dumps({"config_hash": config_hash, "shards": shards}))

    def flush(samples: list[Sample], end: int, fails: dict, convs: dict) -> None:
        info = write_shard(out / shard_name(cfg.split, len(shards)), samples)
        shards.append({**asdict(info), "input_end": end, "failures": dict(fails), "conversions": dict(convs),
                       "n_captions": sum(len(s.meta["captions"]) for s in samples)})
        save_journal()
        if on_shard is not None:
            on_shard(out / info.name)

    samples: list[Sample] = []
    fails: dict[str, list[str]] = defaultdict(list)
    convs: dict[str, list[str]] = defaultdict(list)
    size = 0
    bar = tqdm(total=len(records), initial=start, desc=f"pack {cfg.split}", unit="img", disable=not cfg.progress)
    for index, rec, result, notes in iter_samples(records, emb, cfg=cfg, start=start,
                                                  workers=cfg.workers):
        bar.update(1)
        if not isinstance(result, Sample):
            fails[result.reason].append(rec.file_name)
            continue
        if samples and size + result.n_bytes > cfg.max_shard_bytes:
            flush(samples, index, fails, convs)
            samples, fails, convs, size = [], defaultdict(list), defaultdict(list), 0
        for note in notes:
            convs[note].append(rec.file_name)
        samples.append(result)
        size += result.n_bytes
        if len(samples) == cfg.samples_per_shard:
            flush(samples, index + 1, fails, convs)
            samples, fails, convs, size = [], defaultdict(list), defaultdict(list), 0
    if samples or fails:
        if samples:
            flush(samples, len(records), fails, convs)
        elif shards:  # trailing failures after the last full shard: attribute them to it
            for reason, names in fails.items():
                shards[-1]["failures"].setdefault(reason, []).extend(names)
            shards[-1]["input_end"] = len(records)
            save_journal()
    bar.close()
    if not shards:
        raise UserError(f"no usable images in {cfg.coco_root} for split {cfg.split} (all failed; see above)")
    return shards
