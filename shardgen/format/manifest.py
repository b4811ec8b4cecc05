"""`manifest.json`: what a shard folder holds (every shard's name, count, bytes, sha256), the build's encoder and
preprocessing, and the failures counted by reason; plus the open_clip `sizes.json` and wids index derived from it.

Written last by the builder, read first by every reader: a folder whose manifest is missing is not a dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import schema
from .errors import SchemaError, UserError
from .names import (
    EMBED_DIM,
    EMBED_DTYPE,
    FORMAT_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    is_shard_name,
    is_split_name,
)
from .storage import access_error, join, read_bytes, redact
from .tarheader import BLOCK

# Every member of a sample (one per field, none empty) takes a 512-byte header and at least one 512-byte block, so
# a shard of n samples holds at least n × MIN_SAMPLE_BYTES bytes: a manifest claiming more samples than its bytes
# can hold is refused before any reader plans an epoch over them.
MIN_SAMPLE_BYTES = len(schema.FIELDS) * 2 * BLOCK  # the core fields (jpg, json, npy, txt): a lower bound
MAX_SHARD_BYTES = 1 << 40  # 1 TiB: far above any shard (the builder's default cap is 512 MiB)


@dataclass(frozen=True)
class ShardInfo:
    name: str
    n_samples: int
    n_bytes: int
    sha256: str


@dataclass
class Manifest:
    """What `manifest.json` holds. `shards` are in order; their names are relative to the manifest's folder."""

    split: str
    text_encoder: dict[str, Any]
    preprocess: dict[str, Any]
    shards: list[ShardInfo]
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    conversions: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_captions: int = 0
    schema_version: int = SCHEMA_VERSION
    embed_dim: int = EMBED_DIM
    # Where the split came from when it is not COCO 2014's own train/val: {"dataset": "coco2017", ...} or a
    # Karpathy split file's name and sha256. Optional: absent in manifests of COCO 2014 builds.
    source: dict[str, Any] | None = None
    # How the shards were made: the toolkit and image codec versions, the input (kind, location as given, the
    # sha256 of its index files) and the settings. Optional: absent in manifests written before it was recorded.
    provenance: dict[str, Any] | None = None

    @property
    def n_samples(self) -> int:
        return sum(s.n_samples for s in self.shards)

    @property
    def n_bytes(self) -> int:
        return sum(s.n_bytes for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "schema_version": self.schema_version,
            "split": self.split,
            **({"source": self.source} if self.source is not None else {}),
            "fields": list(schema.SCHEMA.exts),  # looked up now: a test may register a field
            "embed_dim": self.embed_dim,
            "embed_dtype": EMBED_DTYPE,
            "text_encoder": self.text_encoder,
            "preprocess": self.preprocess,
            "shards": [vars(s) for s in self.shards],
            "totals": {
                "n_shards": len(self.shards),
                "n_samples": self.n_samples,
                "n_captions": self.n_captions,
                "n_bytes": self.n_bytes,
            },
            "failures": self.failures,
            "conversions": self.conversions,
            **({"provenance": self.provenance} if self.provenance is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "manifest") -> Manifest:
        """The manifest in `data`, checked: the schema version, a split and shard names a reader can open safely
        (`names.is_shard_name`: plain base names inside the folder, none twice), counts and sizes that are
        non-negative integers, sample counts that fit the shard's bytes (`MIN_SAMPLE_BYTES` each, at most
        `MAX_SHARD_BYTES`), sha256 digests. Raises SchemaError naming `source`."""
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a JSON object expected, got {type(data).__name__}")
            version = _count(data, "schema_version")
            if version != SCHEMA_VERSION:
                raise SchemaError(
                    f"{source}: schema_version {version} is not supported (this reader knows {SCHEMA_VERSION}); "
                    "rebuild the shards with this version of shardgen"
                )
            split = data["split"]
            if not is_split_name(split):
                raise ValueError(f"split {split!r} is not a plain name")
            origin = data.get("source")
            if origin is not None and not isinstance(origin, dict):
                raise TypeError(f"source is a {type(origin).__name__}, not an object")
            provenance = data.get("provenance")
            if provenance is not None and not isinstance(provenance, dict):
                raise TypeError(f"provenance is a {type(provenance).__name__}, not an object")
            return cls(
                split=split,
                text_encoder=dict(data["text_encoder"]),
                preprocess=dict(data["preprocess"]),
                shards=_shards(data["shards"], split),
                failures=dict(data.get("failures", {})),
                conversions=dict(data.get("conversions", {})),
                n_captions=_count(data.get("totals", {}), "n_captions", default=0),
                schema_version=version,
                embed_dim=_count(data, "embed_dim", default=EMBED_DIM),
                source=origin,
                provenance=provenance,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(f"{source}: not a valid shardgen manifest ({exc})") from exc

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise SchemaError(f"{source}: not valid JSON ({exc})") from exc
        except RecursionError:
            raise SchemaError(f"{source}: not a shardgen manifest (JSON nested too deep)") from None
        return cls.from_dict(data, source=source)


def _count(data: dict, key: str, default: int | None = None) -> int:
    """`data[key]` as a non-negative integer (JSON `true` is no count)."""
    value = data[key] if default is None else data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} {value!r} is not a non-negative integer")
    return value


def _shards(entries: list, split: str) -> list[ShardInfo]:
    if not isinstance(entries, list):
        raise TypeError("shards is not a list")
    shards, seen = [], set()
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"name", "n_samples", "n_bytes", "sha256"}:
            raise ValueError(f"shard entry {entry!r:.80} needs exactly name, n_samples, n_bytes, sha256")
        name, sha = entry["name"], entry["sha256"]
        if not is_shard_name(name, split):
            raise ValueError(f"shard name {name!r:.80} is not {split}-NNNNNN.tar (a file in the manifest's folder)")
        if name in seen:
            raise ValueError(f"shard {name} is listed twice")
        if not (isinstance(sha, str) and len(sha) == 64 and not sha.strip("0123456789abcdef")):
            raise ValueError(f"shard {name}: sha256 {sha!r:.80} is not 64 hex digits")
        seen.add(name)
        n_samples, n_bytes = _count(entry, "n_samples"), _count(entry, "n_bytes")
        if n_bytes > MAX_SHARD_BYTES:
            raise ValueError(f"shard {name}: n_bytes {n_bytes} is more than a shard can be ({MAX_SHARD_BYTES})")
        if n_samples * MIN_SAMPLE_BYTES > n_bytes:
            raise ValueError(f"shard {name}: {n_samples} samples cannot fit in {n_bytes} bytes (each takes at least "
                             f"{MIN_SAMPLE_BYTES} bytes of tar headers and blocks)")
        shards.append(ShardInfo(name=name, n_samples=n_samples, n_bytes=n_bytes, sha256=sha))
    return shards


def sizes_json(manifest: Manifest) -> str:
    """open_clip's `sizes.json`: shard file name → number of samples."""
    return json.dumps({s.name: s.n_samples for s in manifest.shards}, indent=2) + "\n"


def wids_index_json(manifest: Manifest) -> str:
    """A wids shard index; URLs are relative to the index file, which wids resolves against its location."""
    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": f"{(manifest.source or {}).get('dataset', 'coco2014')}-{manifest.split}",
        "shardlist": [{"url": s.name, "nsamples": s.n_samples} for s in manifest.shards],
    }
    return json.dumps(index, indent=2) + "\n"


def read_manifest(folder: str, **storage_options) -> Manifest:
    """The manifest of a shard folder or remote prefix. Raises FileNotFoundError (naming the file), another
    OSError when it cannot be read, or SchemaError."""
    url = join(folder, MANIFEST_NAME)
    return Manifest.from_json(read_bytes(url, **storage_options), source=redact(url))


def load_manifest(folder: str, **storage_options) -> Manifest:
    """`read_manifest` for the readers a person runs (show, export): a manifest that is missing or cannot be read
    (credentials, network) is a `UserError` naming it; one that does not parse stays a `SchemaError`."""
    url = join(folder, MANIFEST_NAME)
    try:
        return read_manifest(folder, **storage_options)
    except FileNotFoundError:
        raise UserError(f"{redact(url)}: not found (not a folder written by `shardgen build`, or the build is "
                        "unfinished)") from None
    except OSError as exc:
        raise access_error(url, exc) from None
