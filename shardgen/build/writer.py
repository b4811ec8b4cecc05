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
from ..format.digest import file_digests
from ..format.schema import Sample

__all__ = ["Sample", "temp_path", "write_shard", "write_text_atomic"]  # Sample: the format's, written here

DALI_INDEX_VERSION = "v1.2"  # the `.idx` beside a shard (`build.dali` has the format)
_BLOCK = 512


def temp_path(path: Path) -> Path:
    """A sibling temporary name unique to this process (`name.<pid>.tmp`), so two writers never share one."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_shard(path: Path, samples: list[Sample], *, index: bool = False) -> ShardInfo:
    """Write samples (in key order) to `path` atomically; return its manifest entry. With `index`, also write the
    shard's DALI `.idx` from the offsets the writer knows (no second walk of the tar); where a member did not
    take exactly one 512-byte header (never for our names), no index is written and `build.dali` walks the tar."""
    tmp = temp_path(path)
    sample_schema = schema.SCHEMA
    lines: list[str] | None = [] if index else None
    try:
        with open(tmp, "wb") as fh:
            writer = wds.TarWriter(fh, user="", group="", mode=0o444, mtime=0, encoder=False)
            for sample in sorted(samples, key=lambda s: s.key):
                members = sample_schema.encode(sample.values)
                start = writer.tarstream.offset
                writer.write({"__key__": sample.key, **members})
                if lines is not None:
                    lines = _index_line(lines, sample.key, members, start, writer.tarstream.offset)
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        (sha256,) = file_digests(tmp, "sha256")
        info = ShardInfo(name=path.name, n_samples=len(samples), n_bytes=tmp.stat().st_size, sha256=sha256)
        os.replace(tmp, path)
        if lines is not None:
            write_text_atomic(path.with_suffix(".idx"), f"{DALI_INDEX_VERSION} {len(lines)}\n" + "".join(lines))
    except BaseException as exc:  # a full disk or an interrupt: leave no partial file behind, then re-raise
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file; say which shard it was
        raise
    return info


def _index_line(lines: list[str], key: str, members: dict[str, bytes], start: int, end: int) -> list[str] | None:
    """`lines` plus this sample's index line (`ext offset size name` per member, in tar order), or None when the
    tar did not lay the sample out as one header block per member (then no offsets are known)."""
    parts, pos = [], start
    for ext in sorted(members):
        size = len(members[ext])
        parts.append(f"{ext} {pos + _BLOCK} {size} {key}.{ext}")
        pos += _BLOCK + -(-size // _BLOCK) * _BLOCK
    if pos != end:
        return None
    lines.append(" ".join(parts) + "\n")
    return lines


def write_text_atomic(path: Path, text: str) -> None:
    tmp = temp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
