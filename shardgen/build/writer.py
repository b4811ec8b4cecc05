"""Shard writing: samples → a byte-reproducible tar, written atomically (a per-process `.tmp`, then rename).

Members are grouped per sample and sorted (key, then extension); mtime, owner and mode are fixed, so the same
samples always give the same bytes. The tar format is plain USTAR via webdataset's `TarWriter`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds

from ..format import FIELDS, ShardInfo, encode_npy
from ..format.digest import file_digests


@dataclass(frozen=True)
class Sample:
    """One image and everything about it, ready to be written."""

    key: str
    jpg: bytes
    meta: dict  # image_id, file_name, captions, sizes
    embeddings: np.ndarray  # [n_captions, 512] float16, row i ↔ meta["captions"][i]

    def members(self) -> dict[str, bytes]:
        fields = {
            "jpg": self.jpg,
            "json": json.dumps(self.meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(),
            "npy": encode_npy(self.embeddings),
            "txt": self.meta["captions"][0].encode("utf-8"),
        }
        assert tuple(sorted(fields)) == FIELDS  # the writer and the schema must agree (a bug, not user input)
        return fields

    @property
    def n_bytes(self) -> int:
        return len(self.jpg) + self.embeddings.nbytes + 2048  # + json/txt/headers, close enough for the size cap


def temp_path(path: Path) -> Path:
    """A sibling temporary name unique to this process (`name.<pid>.tmp`), so two writers never share one."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_shard(path: Path, samples: list[Sample]) -> ShardInfo:
    """Write samples (in key order) to `path` atomically; return its manifest entry."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            writer = wds.TarWriter(fh, user="", group="", mode=0o444, mtime=0, encoder=False)
            for sample in sorted(samples, key=lambda s: s.key):
                writer.write({"__key__": sample.key, **sample.members()})
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        (sha256,) = file_digests(tmp, "sha256")
        info = ShardInfo(name=path.name, n_samples=len(samples), n_bytes=tmp.stat().st_size, sha256=sha256)
        os.replace(tmp, path)
    except BaseException as exc:  # a full disk or an interrupt: leave no partial file behind, then re-raise
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file; say which shard it was
        raise
    return info


def write_text_atomic(path: Path, text: str) -> None:
    tmp = temp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
