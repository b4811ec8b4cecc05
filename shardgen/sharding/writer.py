"""Shard writing: samples → a byte-reproducible tar, written atomically (a per-process `.tmp`, then rename).

A sample's members are what the sample schema (`format.schema.SCHEMA`) encodes from its values; members are
grouped per sample and sorted (key, then extension); mtime, owner and mode are fixed, so the same samples always
give the same bytes. The tar format is plain USTAR via webdataset's `TarWriter`.
"""

from __future__ import annotations

import os
from pathlib import Path

import webdataset as wds

from ..format import ShardInfo, schema
from ..format.dali_index import Member, dali_index_text
from ..format.digest import file_digests
from ..format.tarheader import BLOCK
from ..format.schema import Sample

__all__ = ["Sample", "temp_path", "write_shard", "write_text_atomic"]  # Sample: the format's, written here


def temp_path(path: Path) -> Path:
    """A sibling temporary name unique to this process (`name.<pid>.tmp`), so two writers never share one."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_shard(path: Path, samples: list[Sample], *, index: bool = False) -> ShardInfo:
    """Write samples (in key order) to `path` atomically; return its manifest entry. With `index`, also write the
    shard's DALI `.idx` from the offsets the writer knows (no second walk of the tar); where a member did not
    take exactly one 512-byte header (never for our names), no index is written and `build.dali` walks the tar."""
    tmp = temp_path(path)
    sample_schema = schema.SCHEMA
    entries: list[list[Member]] | None = [] if index else None  # per sample; None once offsets are unknown
    try:
        with open(tmp, "wb") as fh:
            writer = wds.TarWriter(fh, user="", group="", mode=0o444, mtime=0, encoder=False)
            for sample in sorted(samples, key=lambda s: s.key):
                members = sample_schema.encode(sample.values)
                start = writer.tarstream.offset
                writer.write({"__key__": sample.key, **members})
                if entries is not None:
                    laid_out = _index_members(sample.key, members, start, writer.tarstream.offset)
                    if laid_out is None:
                        entries = None
                    else:
                        entries.append(laid_out)
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        (sha256,) = file_digests(tmp, "sha256")
        info = ShardInfo(name=path.name, n_samples=len(samples), n_bytes=tmp.stat().st_size, sha256=sha256)
        os.replace(tmp, path)
        if entries is not None:
            write_text_atomic(path.with_suffix(".idx"), dali_index_text(entries))
    except BaseException as exc:  # a full disk or an interrupt: leave no partial file behind, then re-raise
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file; say which shard it was
        raise
    return info


def _index_members(key: str, members: dict[str, bytes], start: int, end: int) -> list[Member] | None:
    """This sample's index members (ext, data offset, size, name, in tar order), or None when the tar did not lay
    the sample out as one header block per member (then no offsets are known)."""
    laid_out, pos = [], start
    for ext in sorted(members):
        size = len(members[ext])
        laid_out.append((ext, pos + BLOCK, size, f"{key}.{ext}"))
        pos += BLOCK + -(-size // BLOCK) * BLOCK
    return laid_out if pos == end else None


def write_text_atomic(path: Path, text: str) -> None:
    tmp = temp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
