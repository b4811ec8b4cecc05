"""Checked reading of samples for every reader a person runs (`verify`, `show`, `export`): a sample's members
decoded and checked field by field by the sample schema (`format.schema`; the loader's fast parser applies the
same rule functions).

A sample holds exactly the schema's members (`FIELDS`). Anything else raises `SchemaError` naming the shard and
the key, whatever a crafted member holds (nesting 200k deep, ids past 64 bits, a broken `.npy` header, no
captions).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import schema
from .errors import SchemaError
from .manifest import Manifest
from .names import EMBED_DIM
from .schema import Sample, SampleMeta
from .storage import access_error, join, open_url, redact
from .tar import iter_tar_samples


def parse_meta(data, *, where: str, key: str | None = None) -> SampleMeta:
    """A `.json` member (bytes or a buffer of UTF-8) decoded and checked by the schema's rules."""
    try:
        return schema.check_meta(schema.decode_json(data), key)
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from None


def check_embeddings(data, *, where: str, n_captions: int, embed_dim: int = EMBED_DIM) -> np.ndarray:
    """A `.npy` member as its [n_captions, embed_dim] float16 matrix (no pickle, header checked)."""
    try:
        emb = schema.decode_embeddings(data)
        schema.check_embedding_layout(emb.dtype, emb.shape, n_captions=n_captions, embed_dim=embed_dim)
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from None
    return emb


def parse_sample(key: str, fields: dict, *, source: str, embed_dim: int = EMBED_DIM) -> Sample:
    """One sample (`key` and its members by extension, as the tar reader yields them) of the shard `source` of a
    set whose embeddings are `embed_dim` wide (its manifest's), decoded and checked by every field of the schema.
    Raises SchemaError naming `source` and `key`."""
    return schema.SCHEMA.decode(key, fields, source=source, embed_dim=embed_dim)


def iter_checked_samples(source: str, manifest: Manifest, **storage_options) -> Iterator[Sample]:
    """Every sample of the shard set at `source` (its `manifest`), in order, checked by `parse_sample`.

    Bad data (a shard the manifest lists that is missing or corrupt, a sample that breaks a rule) raises
    `SchemaError` naming the shard and key; a shard that cannot be read for another reason (credentials,
    network) raises `UserError`."""
    sample_schema = schema.SCHEMA
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
                yield sample_schema.decode(key, fields, source=shard.name, embed_dim=manifest.embed_dim)
