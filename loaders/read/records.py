"""Stage 1 of an epoch: a shard's raw members → `Record`s, parsed as soon as they are read.

A record keeps what the rest of the epoch needs and nothing more: the chosen caption and a view of its embedding
row (not the whole `.npy`), the JPEG bytes (a view into the read window or memory map: no copy), and what the
fields the sample schema added for the loader to carry (`Field.batch`) select for the chosen caption
(`Field.select`). Members no field names (a newer writer's optional field) are not read. The caption is chosen
from (seed, epoch, key) alone (the `caption` stream, `loaders.plan.seeds`), so choosing it here, before the shuffle
buffer, changes nothing about which caption a sample gets, and batches are the same whatever the number of
workers.

Every sample is checked by the sample schema's rules (`shardgen.format.schema`: the same functions `shardgen
verify` runs, applied here to the loader's faster decoding of the core fields: the JSON scanned once, only the
`.npy` header parsed) and a sample that breaks one is a `LoaderError(url: key: bad sample (reason))`, so the
`on_error` policy sees every bad sample and nothing else. Members are checked per group of samples (a group's
samples all hold the same members), not per sample.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np

from shardgen.format import SchemaError, decode_npy, schema

from ..errors import LoaderError
from ..plan.seeds import caption_salt

CORE = ("jpg", "json", "npy", "txt")  # the fields this parser decodes its own fast way; any other through its Field


class Record(NamedTuple):
    """One parsed sample. `embedding` is (dtype, bytes view of one row) for a chosen caption, or the whole
    `[n, D]` array's flat view when every caption is kept (`caption="all"`). `extras`: the values of the
    schema's other fields the loader carries, in `RecordParser.carried` order (`()` for today's schema)."""

    url: str
    key: str
    image_id: int
    caption: str | list[str]
    embedding: object
    jpeg: object
    extras: tuple = ()


_new_record = tuple.__new__  # Record(...) goes through a Python-level __new__: ~0.3 µs a sample more


class RecordParser:
    """Parses samples for one epoch (the epoch salts the random caption choice): `parse_group` for a group of
    samples as the tar reader hands them out. The sample schema is looked up here, once per epoch."""

    def __init__(self, *, caption: str, embed_dim: int, seed: int, epoch: int) -> None:
        self.caption, self.embed_dim = caption, embed_dim
        self.salt = caption_salt(seed, epoch)  # the `caption` stream (loaders.plan.seeds)
        sample_schema = schema.SCHEMA
        self.members, self.member_set = sample_schema.exts, set(sample_schema.exts)
        self.others = tuple(f for f in sample_schema.fields if f.ext not in CORE)  # decoded and checked
        self.carried = tuple(f for f in self.others if f.batch is not None)  # ... and kept for the batch

    def parse(self, url: str, key: str, jpg, meta_json, npy, txt, others: tuple = ()) -> Record:
        """One sample as a Record (`others`: the members of `self.others`). Raises LoaderError naming url and
        key."""
        try:
            meta = schema.check_meta(schema.decode_json(meta_json), key)
            captions = meta.captions
            n = len(captions)
            dtype, shape, fortran, offset = schema.embedding_layout(npy)
            schema.check_embedding_layout(dtype, shape, n_captions=n, embed_dim=self.embed_dim)
            schema.check_first_caption(str(txt, "utf-8", "replace"), captions)
            if self.caption == "all":
                j = None
            else:
                j = 0 if self.caption == "first" or n == 1 else zlib.crc32(key.encode(), self.salt) % n
            extras = self._others(jpg, meta, npy, others, j) if others else ()
        except SchemaError as exc:
            raise LoaderError(f"{url}: {key}: bad sample ({str(exc)[:200]})") from None
        if fortran:  # never written by shardgen; allowed by the format
            rows = np.ascontiguousarray(decode_npy(npy))
            offset, npy = 0, rows.tobytes()
        if j is None:
            return _new_record(Record, (url, key, meta.image_id, captions,
                                        np.frombuffer(npy, dtype, n * self.embed_dim, offset), jpg, extras))
        size = self.embed_dim * dtype.itemsize
        row = (dtype, memoryview(npy)[offset + j * size:offset + (j + 1) * size])
        return _new_record(Record, (url, key, meta.image_id, captions[j], row, jpg, extras))

    def _others(self, jpg, meta: schema.SampleMeta, npy, members: tuple, caption: int | None) -> tuple:
        """The fields beyond the core ones, decoded and checked in schema order; what the carried ones keep for
        the chosen `caption` (its index; None: all kept), each field's `select`."""
        values = {"jpg": jpg, "json": meta.fields, "npy": schema.decode_embeddings(npy)}
        for field, data in zip(self.others, members):
            value = field.decode(data)
            if field.check is not None:
                field.check(value, values)
            values[field.ext] = value
        return tuple(values[f.ext] if f.select is None else f.select(values[f.ext], caption) for f in self.carried)

    def parse_group(self, url: str, keys: list[str], fields: dict[str, list], skip) -> list[Record]:
        """The group's samples parsed. A bad sample raises LoaderError, or with `skip` (a callable taking the
        error) is left out and reported to it."""
        if not self.member_set <= fields.keys():  # every sample of a group holds the same members; more is fine
            return self._bad_group(url, keys, schema.member_problem(fields, self.members), skip)
        columns = [keys, fields["jpg"], fields["json"], fields["npy"], fields["txt"]]
        if self.others:
            columns.append(list(zip(*(fields[f.ext] for f in self.others))))
        samples = list(zip(*columns))
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

    @staticmethod
    def _bad_group(url: str, keys: list[str], problem: str, skip) -> list[Record]:
        for key in keys:
            error = LoaderError(f"{url}: {key}: bad sample ({problem})")
            if skip is None:
                raise error
            skip(error)
        return []

