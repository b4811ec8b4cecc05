"""Stage 1 of an epoch: a shard's raw members → `Record`s, parsed as soon as they are read.

A record keeps what the rest of the epoch needs and nothing more: the chosen caption and a view of its embedding
row (not the whole `.npy`), and the JPEG bytes (a view into the read window or memory map: no copy). The caption is
chosen from (seed, epoch, key) alone, so choosing it here, before the shuffle buffer, changes nothing about which
caption a sample gets, and batches are the same whatever the number of workers.

Everything a crafted sample can get wrong is checked here and raised as `LoaderError(url: key: reason)`, so the
`on_error` policy sees every bad sample and nothing else: members missing, JSON that is not one object (or nested
absurdly deep), no captions, captions that are not strings, an image id that is not a non-negative int64, an
`.npy` whose header or shape does not match.
"""

from __future__ import annotations

import json
import zlib
from typing import NamedTuple

import numpy as np

from shardgen.format import decode_npy, npy_layout

from .errors import LoaderError

_json_scan = json.JSONDecoder().scan_once  # the C scanner without `json.loads`' wrappers (~1.5 µs a sample)
_INT64_MAX = 2**63 - 1


class Record(NamedTuple):
    """One parsed sample. `embedding` is (dtype, bytes view of one row) for a chosen caption, or the whole
    `[n, D]` array's flat view when every caption is kept (`caption="all"`)."""

    url: str
    key: str
    image_id: int
    caption: str | list[str]
    embedding: object
    jpeg: object


_new_record = tuple.__new__  # Record(...) goes through a Python-level __new__: ~0.3 µs a sample more


def _json_object(data) -> dict:
    text = str(data, "utf-8")
    try:
        obj, end = _json_scan(text, 0)
    except StopIteration:
        raise ValueError("json member is not JSON") from None
    if end != len(text) and text[end:].strip() or not isinstance(obj, dict):
        raise ValueError("json member is not one JSON object")
    return obj


class RecordParser:
    """Parses samples for one epoch (the epoch salts the random caption choice): `parse_group` for a group of
    samples as the tar reader hands them out."""

    def __init__(self, *, caption: str, embed_dim: int, seed: int, epoch: int) -> None:
        self.caption, self.embed_dim = caption, embed_dim
        self.salt = zlib.crc32(f"{seed}:{epoch}:".encode())  # crc32(f"{seed}:{epoch}:{key}") continues from it

    def parse(self, url: str, key: str, jpg, meta_json, npy) -> Record:
        """One sample as a Record. Raises LoaderError naming url and key."""
        dim = self.embed_dim
        try:
            if jpg is None or meta_json is None or npy is None:
                missing = [e for e, v in (("jpg", jpg), ("json", meta_json), ("npy", npy)) if v is None]
                raise KeyError(f"no {'/'.join(missing)} member")
            meta = _json_object(meta_json)
            captions = meta["captions"]
            image_id = meta["image_id"]
            dtype, shape, fortran, offset = npy_layout(npy)
            n = len(captions) if type(captions) is list else 0
            if not n:
                raise ValueError("captions must be a non-empty list of strings")
            if type(image_id) is not int or not 0 <= image_id <= _INT64_MAX:
                raise ValueError(f"image_id must be an int in [0, 2**63), got {str(image_id)[:30]}")
            if shape != (n, dim):
                raise ValueError(f"embeddings {shape} do not match {n} captions of dim {dim}")
            if self.caption == "all":
                if not all(type(c) is str for c in captions):
                    raise ValueError("captions must be a non-empty list of strings")
                j = -1
            else:  # only the chosen caption travels: only its type matters
                j = 0 if self.caption == "first" or n == 1 else zlib.crc32(key.encode(), self.salt) % n
                if type(captions[j]) is not str:
                    raise ValueError("captions must be a non-empty list of strings")
        except (KeyError, ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
            raise LoaderError(f"{url}: {key}: bad sample ({str(exc)[:200]})") from None
        if fortran:  # never written by shardgen; allowed by the format
            rows = np.ascontiguousarray(decode_npy(npy))
            dtype, offset, npy = rows.dtype, 0, rows.tobytes()
        if j < 0:
            return _new_record(Record, (url, key, image_id, captions, np.frombuffer(npy, dtype, n * dim, offset),
                                        jpg))
        size = dim * dtype.itemsize
        row = (dtype, memoryview(npy)[offset + j * size:offset + (j + 1) * size])
        return _new_record(Record, (url, key, image_id, captions[j], row, jpg))

    def parse_group(self, url: str, keys: list[str], fields: dict[str, list], skip) -> list[Record]:
        """The group's samples parsed. A bad sample raises LoaderError, or with `skip` (a callable taking the
        error) is left out and reported to it."""
        none = [None] * len(keys)
        samples = list(zip(keys, fields.get("jpg", none), fields.get("json", none), fields.get("npy", none)))
        parse = self.parse
        try:
            return [parse(url, *sample) for sample in samples]
        except LoaderError:
            if skip is None:
                raise
        out = []
        for sample in samples:
            try:
                out.append(parse(url, *sample))
            except LoaderError as exc:
                skip(exc)
        return out
