"""The on-disk contract between the shard writer (`shardgen`) and every reader (`loaders`, verify, export).

Both sides import these names, so the key format, field set, shard naming and manifest layout cannot drift.
A shard is a POSIX tar whose members are grouped per sample, sorted by key, each sample holding exactly
`FIELDS`. `manifest.json` is written last and describes every shard (count, bytes, sha256).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
FORMAT_NAME = "coco-clip-webdataset"
EMBED_DIM = 512
EMBED_DTYPE = "float16"
MAX_TOKENS = 77  # CLIP's context length

# Every sample carries exactly these members, in this order inside the tar (sorted by extension).
FIELDS = ("jpg", "json", "npy", "txt")

MANIFEST_NAME = "manifest.json"
SIZES_NAME = "sizes.json"  # open_clip: {shard_name: n_samples}
WIDS_INDEX_NAME = "shardindex.json"  # wids: {"wids_version": 1, "shardlist": [{url, nsamples}]}

_SHARD_RE = re.compile(r"^(?P<split>[a-z0-9_]+)-(?P<index>\d{6})\.tar$")


class SchemaError(ValueError):
    """A manifest or sample that does not follow this contract."""


def make_key(image_id: int) -> str:
    """The sample key: the COCO image id as 12 digits (no dots, so every tar reader splits it right)."""
    if image_id < 0:
        raise SchemaError(f"image id must be non-negative, got {image_id}")
    return f"{image_id:012d}"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def parse_shard_name(name: str) -> tuple[str, int] | None:
    m = _SHARD_RE.match(name)
    return (m["split"], int(m["index"])) if m else None


def encode_npy(array: np.ndarray) -> bytes:
    """Serialize an embedding matrix as a .npy file loadable with `allow_pickle=False`."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool, int, int]] = {}  # header dict text, or the
# first 128 bytes of the file when that is exactly magic + version + length + header


def npy_layout(data) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, payload offset) of a .npy member, checked against its length; no pickle
    (object dtypes are refused, as `np.load(allow_pickle=False)` does). Raises ValueError on anything malformed.

    `np.load` re-parses the header dict with `ast` for every sample (~55 µs); embeddings share a handful of
    headers, so parsed headers are cached."""
    head = bytes(data[:128])  # the whole header of a version-1 file with a short header dict (ours: 128 bytes)
    parsed = _NPY_HEADERS.get(head)
    if parsed is not None and len(data) - parsed[3] == parsed[4]:
        return parsed[:4]
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    major = data[6]
    if major == 1:
        hlen, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        hlen, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise ValueError(f"unsupported .npy version {major}")
    header = bytes(data[start:start + hlen])
    parsed = _NPY_HEADERS.get(header)
    if parsed is None:
        import ast

        d = ast.literal_eval(header.decode("latin1"))
        dtype = np.dtype(d["descr"])
        if dtype.hasobject:
            raise ValueError("object arrays need pickle; refused")
        shape = tuple(int(n) for n in d["shape"])
        parsed = (dtype, shape, bool(d["fortran_order"]), start + hlen, int(np.prod(shape)) * dtype.itemsize)
        if len(_NPY_HEADERS) < 256:
            _NPY_HEADERS[header] = parsed
            if start + hlen == 128:  # also by the file's first 128 bytes: one lookup next time
                _NPY_HEADERS[bytes(data[:128])] = parsed
    dtype, shape, fortran, offset, nbytes = parsed
    if len(data) - offset != nbytes:
        raise ValueError(f"npy payload has {len(data) - offset} bytes, header says {nbytes}")
    return dtype, shape, fortran, offset


def decode_npy(data) -> np.ndarray:
    """A .npy member as an array (a read-only view of `data`); see `npy_layout`."""
    dtype, shape, fortran, offset = npy_layout(data)
    arr = np.frombuffer(data, dtype=dtype, count=(len(data) - offset) // dtype.itemsize, offset=offset)  # checked
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


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


def iter_tar_samples(fileobj, *, source: str = "shard"):
    """Yield (key, {ext: bytes}) from a tar stream (pipes, HTTP and S3 bodies too), grouping consecutive members
    with the same key. A truncated or corrupt tar raises `SchemaError` naming the source and the last key read."""
    from .tarstream import TarFormatError, iter_samples

    key = None
    try:
        for key, fields in iter_samples(fileobj):
            yield key, fields
    except (TarFormatError, OSError) as exc:
        raise SchemaError(f"{source}: corrupt or truncated tar after key {key!r} ({exc})") from exc
