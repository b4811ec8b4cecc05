"""Manifest assembly: the journaled shards, the caption reader's problems and the caption conversions → one
`Manifest`, then the indexes and the manifest written in the order readers rely on (manifest last).

Failures and conversions are counted by reason; each reason lists up to `MAX_LISTED_FILES` file names so a manifest
of a split with many bad files stays small, while its counts stay complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..sources.coco import CocoImage
from ..config import BuildConfig
from ..text.cache import CaptionEmbeddings
from ..format import (
    EMBED_DIM,
    EMBED_DTYPE,
    MANIFEST_NAME,
    SIZES_NAME,
    WIDS_INDEX_NAME,
    Manifest,
    ShardInfo,
    sizes_json,
    wids_index_json,
)
from .writer import write_text_atomic

MAX_LISTED_FILES = 1000  # per reason in the manifest; counts are always complete
TRUNCATED_CAPTION = "caption_truncated_to_77_tokens"


def _add(tally: dict[str, dict], reason: str, names: Iterable[str]) -> None:
    names = list(names)
    if not names:
        return
    entry = tally.setdefault(reason, {"count": 0, "files": []})
    for name in names:
        entry["count"] += 1
        if len(entry["files"]) < MAX_LISTED_FILES:
            entry["files"].append(name)


def tally_problems(caption_problems: Mapping[str, list[str]], shards: Sequence[dict], records: Sequence[CocoImage],
                   emb: CaptionEmbeddings) -> tuple[dict[str, dict], dict[str, dict]]:
    """(failures, conversions), each reason → {"count", "files"}, sorted by reason."""
    failures: dict[str, dict] = {}
    conversions: dict[str, dict] = {}
    for reason, names in sorted(caption_problems.items()):
        _add(failures, reason, names)
    for entry in shards:
        for reason, names in entry["failures"].items():
            _add(failures, reason, names)
        for reason, names in entry["conversions"].items():
            _add(conversions, reason, names)
    truncated = set(emb.truncated)
    _add(conversions, TRUNCATED_CAPTION, [rec.file_name for rec in records for cap in rec.captions
                                          if cap in truncated])
    return dict(sorted(failures.items())), dict(sorted(conversions.items()))


def assemble_manifest(cfg: BuildConfig, *, shards: Sequence[dict], caption_problems: Mapping[str, list[str]],
                      records: Sequence[CocoImage], emb: CaptionEmbeddings,
                      source: dict[str, Any] | None = None) -> Manifest:
    """The manifest of a finished build from its journal entries (one per shard, in order); `source` says where a
    split other than COCO 2014's own came from (COCO 2017, a Karpathy split file and its sha256)."""
    failures, conversions = tally_problems(caption_problems, shards, records, emb)
    return Manifest(
        split=cfg.dataset_split,
        source=source,
        text_encoder={"name": cfg.text_encoder, **_encoder_path(cfg.text_encoder), "random_init": emb.random_init,
                      "semantic": not emb.random_init, "output": "text_embeds (projected, EOS-pooled)",
                      "embed_dim": EMBED_DIM, "dtype": EMBED_DTYPE, "l2_normalized": True},
        preprocess=cfg.preprocess_record(),
        shards=[ShardInfo(**{k: e[k] for k in ("name", "n_samples", "n_bytes", "sha256")}) for e in shards],
        failures=failures, conversions=conversions,
        n_captions=sum(e["n_captions"] for e in shards),
    )


def _encoder_path(text_encoder: str) -> dict[str, str]:
    """A local encoder folder is also recorded resolved, so readers elsewhere (`models.evaluate --query`) find it."""
    path = Path(text_encoder).expanduser()
    return {"path": str(path.resolve())} if path.is_dir() else {}


def write_manifest(out: Path, manifest: Manifest) -> None:
    """open_clip's sizes.json and the wids index first, the manifest last: readers trust what it lists."""
    write_text_atomic(out / SIZES_NAME, sizes_json(manifest))
    write_text_atomic(out / WIDS_INDEX_NAME, wids_index_json(manifest))
    write_text_atomic(out / MANIFEST_NAME, manifest.to_json())
