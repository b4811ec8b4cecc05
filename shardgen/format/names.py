"""Names and constants of the shard format, shared by the writer and every reader so they cannot drift.

A shard is a POSIX tar whose members are grouped per sample, sorted by key; what a sample holds is the sample
schema's business (`schema.py`). Shards are named `<split>-NNNNNN.tar`; `manifest.json`, written last, lists them
(see `manifest.py`).
"""

from __future__ import annotations

import re

from .errors import SchemaError

SCHEMA_VERSION = 1
FORMAT_NAME = "coco-clip-webdataset"
EMBED_DIM = 512
EMBED_DTYPE = "float16"
MAX_IMAGE_ID = 10**12 - 1  # the sample key spells the image id in 12 digits (`make_key`)
# A stored (preprocessed) image whose header claims more pixels is refused before decoding: far above any image a
# build writes (COCO's originals are <= 640 px). The build's own limit on its inputs is BuildConfig.max_image_pixels.
MAX_STORED_IMAGE_PIXELS = 40_000_000

MANIFEST_NAME = "manifest.json"
SIZES_NAME = "sizes.json"  # open_clip: {shard_name: n_samples}
WIDS_INDEX_NAME = "shardindex.json"  # wids: {"wids_version": 1, "shardlist": [{url, nsamples}]}


def make_key(image_id: int) -> str:
    """The sample key: the COCO image id as 12 digits (no dots, so every tar reader splits it right)."""
    if image_id < 0:
        raise SchemaError(f"image id must be non-negative, got {image_id}")
    return f"{image_id:012d}"


_DECIMAL_RE = re.compile(r"[0-9]+")


def parse_decimal(text: str) -> int | None:
    """`text` as a whole number when it is ASCII digits only, else None. `str.isdigit()` is no such check: it
    accepts `²` and other Unicode digits, which `int()` then refuses (or reads as another number)."""
    return int(text) if isinstance(text, str) and _DECIMAL_RE.fullmatch(text) else None


_SPLIT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_SHARD_RE = re.compile(r"(?P<split>[A-Za-z0-9][A-Za-z0-9_-]*)-(?P<index>[0-9]{6,})\.tar")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def is_split_name(split: str) -> bool:
    """Whether `split` can name shards: letters, digits, `_` and `-` (so a shard name is a plain base name)."""
    return isinstance(split, str) and _SPLIT_RE.fullmatch(split) is not None


def is_shard_name(name: str, split: str) -> bool:
    """Whether `name` is a name `shard_name(split, i)` writes: `<split>-NNNNNN.tar`, a plain base name (no
    folder, no `..`, nothing absolute), so a reader never opens a file outside the dataset's folder."""
    m = _SHARD_RE.fullmatch(name) if isinstance(name, str) else None
    return m is not None and m["split"] == split

