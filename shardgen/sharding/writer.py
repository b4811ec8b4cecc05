"""Shard writing: samples → a byte-reproducible tar at a local path or a URL, hashed as it is written.

A sample's members are what the sample schema (`format.schema.SCHEMA`) encodes from its values; members are
grouped per sample and sorted (key, then extension); mtime, owner and mode are fixed, so the same samples always
give the same bytes. The tar format is plain USTAR via webdataset's `TarWriter`. A local shard is written under a
temporary name of its own (`format.open_atomic`: no link followed), fsynced and renamed; a remote one (`s3://…`) is streamed to the store through fsspec, which
makes it visible whole when the upload completes. The sha256 and size come from the bytes as they are written:
no second read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import webdataset as wds

from ..format import ShardInfo, open_atomic, schema, write_text_atomic
from ..format.dali_index import Member, dali_index_text, index_name
from ..format.schema import Sample
from ..format.tarheader import BLOCK

__all__ = ["Sample", "write_shard"]  # Sample: the format's, written here


class _Hashing:
    """A write-only file that hashes and counts what passes through it to `sink`."""

    def __init__(self, sink) -> None:
        self.sink, self.sha256, self.n_bytes = sink, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.n_bytes += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def _write_tar(fh, samples: list[Sample], entries: list | None) -> list | None:
    """Write the samples (in key order) as a tar to `fh`; the index entries, or None once offsets are unknown."""
    sample_schema = schema.SCHEMA
    writer = wds.TarWriter(fh, user="", group="", mode=0o444, mtime=0, encoder=False)
    for sample in sorted(samples, key=lambda s: s.key):
        members = sample_schema.encode(sample.values)
        start = writer.tarstream.offset
        writer.write({"__key__": sample.key, **members})
        if entries is not None:
            laid_out = _index_members(sample.key, members, start, writer.tarstream.offset)
            entries = None if laid_out is None else [*entries, laid_out]
    writer.close()
    return entries


def write_shard(path: Path | str, samples: list[Sample], *, index: bool = False) -> ShardInfo:
    """Write samples (in key order) to `path` (a local path, written atomically, or a URL); return its manifest
    entry. With `index`, also write the shard's DALI `.idx` from the offsets the writer knows (no second walk of
    the tar); where a member did not take exactly one 512-byte header (never for our names), no index is written
    (`sharding.dali` walks a local tar instead)."""
    if "://" in str(path):  # a URL (file:// too): written through fsspec
        return _write_remote(str(path), samples, index=index)
    path = Path(path)
    with open_atomic(path) as raw:  # a temporary name of its own, through no link; renamed once whole
        fh = _Hashing(raw)
        entries = _write_tar(fh, samples, [] if index else None)
    info = ShardInfo(name=path.name, n_samples=len(samples), n_bytes=fh.n_bytes, sha256=fh.sha256.hexdigest())
    if entries is not None:
        write_text_atomic(path.with_suffix(".idx"), dali_index_text(entries))
    return info


def _write_remote(url: str, samples: list[Sample], *, index: bool) -> ShardInfo:
    import fsspec

    from ..format.storage import with_timeouts

    fs, where = fsspec.core.url_to_fs(url, **with_timeouts(url))
    with fs.open(where, "wb") as raw:  # an object store shows the object only once the upload completes
        fh = _Hashing(raw)
        entries = _write_tar(fh, samples, [] if index else None)
    if entries is not None:
        fs.pipe_file(index_name(where), dali_index_text(entries).encode())
    return ShardInfo(name=url.rsplit("/", 1)[-1], n_samples=len(samples), n_bytes=fh.n_bytes,
                     sha256=fh.sha256.hexdigest())


def _index_members(key: str, members: dict[str, bytes], start: int, end: int) -> list[Member] | None:
    """This sample's index members (ext, data offset, size, name, in tar order), or None when the tar did not lay
    the sample out as one header block per member (then no offsets are known)."""
    laid_out, pos = [], start
    for ext in sorted(members):
        size = len(members[ext])
        laid_out.append((ext, pos + BLOCK, size, f"{key}.{ext}"))
        pos += BLOCK + -(-size // BLOCK) * BLOCK
    return laid_out if pos == end else None
