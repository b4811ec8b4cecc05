"""`manifest.json`: what a shard folder holds (every shard's name, count, bytes, sha256), the build's encoder and
preprocessing, and the failures counted by reason; plus the open_clip `sizes.json` and wids index derived from it.

Written last by the builder, read first by every reader: a folder whose manifest is missing is not a dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import SchemaError
from .names import EMBED_DIM, EMBED_DTYPE, FIELDS, FORMAT_NAME, MANIFEST_NAME, SCHEMA_VERSION
from .storage import join, read_text


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
            "fields": list(FIELDS),
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
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "manifest") -> Manifest:
        try:
            version = int(data["schema_version"])
            if version != SCHEMA_VERSION:
                raise SchemaError(
                    f"{source}: schema_version {version} is not supported (this reader knows {SCHEMA_VERSION}); "
                    "rebuild the shards with this version of shardgen"
                )
            dim = int(data.get("embed_dim", EMBED_DIM))
            return cls(
                split=str(data["split"]),
                text_encoder=dict(data["text_encoder"]),
                preprocess=dict(data["preprocess"]),
                shards=[ShardInfo(**s) for s in data["shards"]],
                failures=dict(data.get("failures", {})),
                conversions=dict(data.get("conversions", {})),
                n_captions=int(data.get("totals", {}).get("n_captions", 0)),
                schema_version=version,
                embed_dim=dim,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(f"{source}: not a valid shardgen manifest ({exc!r})") from exc

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{source}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, source=source)


def sizes_json(manifest: Manifest) -> str:
    """open_clip's `sizes.json`: shard file name → number of samples."""
    return json.dumps({s.name: s.n_samples for s in manifest.shards}, indent=2) + "\n"


def wids_index_json(manifest: Manifest) -> str:
    """A wids shard index; URLs are relative to the index file, which wids resolves against its location."""
    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": f"coco2014-{manifest.split}",
        "shardlist": [{"url": s.name, "nsamples": s.n_samples} for s in manifest.shards],
    }
    return json.dumps(index, indent=2) + "\n"


def read_manifest(folder: str, **storage_options) -> Manifest:
    """The manifest of a shard folder or remote prefix. Raises FileNotFoundError (naming the file) or
    SchemaError."""
    url = join(folder, MANIFEST_NAME)
    return Manifest.from_json(read_text(url, **storage_options), source=url)
