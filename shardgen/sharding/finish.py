"""Manifest assembly: the journaled shards, the caption reader's problems and the caption conversions → one
`Manifest`, then the indexes and the manifest written in the order readers rely on (manifest last).

Failures and conversions are counted by reason; each reason lists up to `MAX_LISTED_FILES` file names so a manifest
of a split with many bad files stays small, while its counts stay complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..sources.listing import Listing
from ..config import BuildConfig
from ..text.cache import CaptionEmbeddings
from ..format import (
    EMBED_DTYPE,
    MANIFEST_NAME,
    SIZES_NAME,
    WIDS_INDEX_NAME,
    Manifest,
    ShardInfo,
    sizes_json,
    wids_index_json,
)
from .outputs import Output

MAX_LISTED_FILES = 1000  # per reason in the manifest; counts are always complete
# Reasons counted per caption (an annotation, a table row, a sentence), not per image: the manifest's `unit` keeps
# the two apart, so "skipped" never adds captions and images together.
CAPTION_REASONS = frozenset({"empty_caption", "caption_not_text", "caption_without_image", "malformed_annotation"})
TRUNCATED_CAPTION = "caption_truncated_to_77_tokens"


def _add(tally: dict[str, dict], reason: str, names: Iterable[str]) -> None:
    names = list(names)
    if not names:
        return
    entry = tally.setdefault(reason, {"count": 0, "unit": "caption" if reason in CAPTION_REASONS else "image",
                                      "files": []})
    for name in names:
        entry["count"] += 1
        if len(entry["files"]) < MAX_LISTED_FILES:
            entry["files"].append(name)


def tally_problems(caption_problems: Mapping[str, list[str]], shards: Sequence[dict], records: Listing,
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
    _add(conversions, TRUNCATED_CAPTION, [records.file_name[records.image_of_caption(k)]
                                          for k in emb.truncated.tolist()])
    return dict(sorted(failures.items())), dict(sorted(conversions.items()))


def assemble_manifest(cfg: BuildConfig, *, shards: Sequence[dict], caption_problems: Mapping[str, list[str]],
                      records: Listing, emb: CaptionEmbeddings, source: dict[str, Any] | None = None,
                      provenance: dict[str, Any] | None = None, fingerprint: str | None = None) -> Manifest:
    """The manifest of a finished build from its journal entries (one per shard, in order); `source` says where a
    split other than COCO 2014's own came from (COCO 2017, a Karpathy split file and its sha256); `provenance`
    is the input's kind, location and index files' sha256 (`inputs.load_input`)."""
    failures, conversions = tally_problems(caption_problems, shards, records, emb)
    width = emb.width
    return Manifest(
        split=cfg.dataset_split,
        source=source,
        text_encoder={"name": recorded_encoder_name(cfg.text_encoder),
                      **({"fingerprint": fingerprint} if fingerprint else {}), "random_init": emb.random_init,
                      "semantic": not emb.random_init, "output": "text_embeds (projected, EOS-pooled)",
                      "embed_dim": width, "dtype": EMBED_DTYPE, "l2_normalized": True},
        preprocess=cfg.preprocess_record(),
        shards=[ShardInfo(**{k: e[k] for k in ("name", "n_samples", "n_bytes", "sha256")}) for e in shards],
        failures=failures, conversions=conversions,
        n_captions=sum(e["n_captions"] for e in shards),
        embed_dim=width,
        provenance={**environment_record(), "input": provenance or {}, "settings": build_settings(cfg)},
    )


def recorded_encoder_name(text_encoder: str) -> str:
    """How the manifest names the encoder: a hub id as it is, a local folder by its base name (no path of the
    building machine; `models.evaluate` looks for it beside the shards, and the fingerprint says which it was)."""
    path = Path(text_encoder).expanduser()
    return path.name if path.is_dir() else text_encoder


def environment_record() -> dict[str, Any]:
    from .probe import environment

    found = environment()
    return {"toolkit_version": found.pop("toolkit"), "codecs": found}


def build_settings(cfg: BuildConfig) -> dict[str, Any]:
    """The settings that decide the shards' bytes and layout (no paths: those are the input's)."""
    return {"split": cfg.dataset_split, "samples_per_shard": cfg.samples_per_shard,
            "max_shard_bytes": cfg.max_shard_bytes, "max_image_pixels": cfg.max_image_pixels,
            "dali_index": cfg.dali_index, "limit": cfg.limit, "encode_batch_size": cfg.encode_batch_size}


def write_manifest(output: Output, manifest: Manifest) -> None:
    """open_clip's sizes.json and the wids index first, the manifest last: readers trust what it lists."""
    output.write_text(SIZES_NAME, sizes_json(manifest))
    output.write_text(WIDS_INDEX_NAME, wids_index_json(manifest))
    output.write_text(MANIFEST_NAME, manifest.to_json())
