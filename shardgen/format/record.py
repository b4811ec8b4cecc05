"""The rules a sample read from a shard must follow, written once for every reader (`verify`, `show`, `export`;
the loader's own fast parser follows the same rules through `check_meta`).

A sample holds exactly the members `FIELDS`. Its `.json` is one JSON object whose `image_id` is an integer the
sample's key spells in 12 digits and whose `captions` is a non-empty list of strings; its `.npy` is a float16
`[n_captions, EMBED_DIM]` matrix (row i ↔ captions[i]); its `.txt` is the first caption. Anything else raises
`SchemaError` naming the shard and the key, whatever a crafted member holds (nesting 200k deep, ids past 64 bits,
a broken `.npy` header, no captions).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from .errors import SchemaError
from .manifest import Manifest
from .names import EMBED_DIM, EMBED_DTYPE, FIELDS, MAX_IMAGE_ID, make_key
from .npy import decode_npy
from .storage import access_error, join, open_url, redact
from .tar import iter_tar_samples


class SampleMeta(NamedTuple):
    """What a sample's `.json` says: the image id, its captions, and the whole object (file_name, width, ...)."""

    image_id: int
    captions: list[str]
    fields: dict[str, Any]


class Record(NamedTuple):
    """One sample of a shard, checked (`parse_sample`)."""

    source: str  # the shard it came from, as named in messages
    key: str
    meta: SampleMeta
    jpg: bytes
    embeddings: np.ndarray  # [n_captions, EMBED_DIM] float16, a read-only view of the .npy member


def check_meta(obj: Any, *, where: str, key: str | None = None) -> SampleMeta:
    """The rules for a decoded `.json` member (for a reader that decodes JSON its own way). `where` (shard: key)
    starts every message; `key`, when given, must spell the image id."""
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: json is a {type(obj).__name__}, not an object")
    image_id, captions = obj.get("image_id"), obj.get("captions")
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise SchemaError(f"{where}: json image_id {image_id!r:.40} is not an integer")
    if not 0 <= image_id <= MAX_IMAGE_ID:
        raise SchemaError(f"{where}: json image_id {image_id!r:.40} is outside 0..{MAX_IMAGE_ID}")
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise SchemaError(f"{where}: json captions is not a list of strings")
    if not captions:
        raise SchemaError(f"{where}: no captions (a sample needs at least one)")
    try:
        "".join(captions).encode("utf-8")
    except UnicodeEncodeError:  # JSON escapes can spell lone surrogates, which no file or tokenizer takes
        raise SchemaError(f"{where}: captions are not valid Unicode text") from None
    if key is not None and key != make_key(image_id):
        raise SchemaError(f"{where}: key does not match image_id {image_id}")
    return SampleMeta(image_id, captions, obj)


def parse_meta(data, *, where: str, key: str | None = None) -> SampleMeta:
    """A `.json` member (bytes or a buffer of UTF-8) checked by `check_meta`."""
    try:
        obj = json.loads(str(data, "utf-8"))
    except ValueError as exc:  # not UTF-8, or not JSON
        raise SchemaError(f"{where}: json does not parse ({exc})") from None
    except RecursionError:
        raise SchemaError(f"{where}: json nested too deep") from None
    return check_meta(obj, where=where, key=key)


def check_embeddings(data, *, where: str, n_captions: int, embed_dim: int = EMBED_DIM) -> np.ndarray:
    """A `.npy` member as its [n_captions, embed_dim] float16 matrix (no pickle, header checked)."""
    try:
        emb = decode_npy(data)
    except ValueError as exc:
        raise SchemaError(f"{where}: npy does not load without pickle ({exc})") from None
    if emb.dtype != np.dtype(EMBED_DTYPE) or emb.shape != (n_captions, embed_dim):
        raise SchemaError(f"{where}: embeddings are {emb.dtype} {emb.shape}, expected {EMBED_DTYPE} "
                          f"({n_captions}, {embed_dim}) for {n_captions} captions")
    return emb


def parse_sample(key: str, fields: dict, *, source: str) -> Record:
    """One sample (`key` and its members by extension, as the tar reader yields them) of the shard `source`,
    checked against every rule above. Raises SchemaError naming `source` and `key`."""
    where = f"{source}: {key}"
    if tuple(sorted(fields)) != FIELDS:
        missing, extra = sorted(set(FIELDS) - set(fields)), sorted(set(fields) - set(FIELDS))
        raise SchemaError(f"{where}: members {sorted(fields)}, expected {list(FIELDS)}"
                          + (f" (missing {', '.join(missing)})" if missing else "")
                          + (f" (unexpected {', '.join(extra)})" if extra else ""))
    meta = parse_meta(fields["json"], where=where, key=key)
    emb = check_embeddings(fields["npy"], where=where, n_captions=len(meta.captions))
    if str(fields["txt"], "utf-8", "replace") != meta.captions[0]:
        raise SchemaError(f"{where}: txt is not the first caption")
    return Record(source, key, meta, fields["jpg"], emb)


def iter_records(source: str, manifest: Manifest, **storage_options) -> Iterator[Record]:
    """Every sample of the shard set at `source` (its `manifest`), in order, checked by `parse_sample`.

    Bad data (a shard the manifest lists that is missing or corrupt, a sample that breaks a rule) raises
    `SchemaError` naming the shard and key; a shard that cannot be read for another reason (credentials,
    network) raises `UserError`."""
    for shard in manifest.shards:
        url = join(source, shard.name)
        try:
            fh = open_url(url, **storage_options)
        except FileNotFoundError:
            raise SchemaError(f"{redact(url)}: listed in the manifest but missing") from None
        except OSError as exc:
            raise access_error(url, exc) from None
        with fh:
            for key, fields in iter_tar_samples(fh, source=shard.name):
                yield parse_sample(key, fields, source=shard.name)
