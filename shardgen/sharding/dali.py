"""DALI `.idx` index files (`format.dali_index`) for shards already on disk, by walking the tar: for shards the
writer did not index itself (resumed ones, a run with `--no-dali-index` before, `shardgen export`). Written beside
each shard by `shardgen build` (on by default; `--no-dali-index` skips it); the loader seeks inside shards with it
(`loaders.seek`)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from ..format import split_member_name
from ..format.dali_index import Member, dali_index_text
from .writer import write_text_atomic


def shard_index_text(shard: Path) -> str:
    """The DALI index for one local shard."""
    samples: list[list[Member]] = []
    last = None
    with tarfile.open(shard) as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, ext = split_member_name(m.name)
            if key != last:
                samples.append([])
                last = key
            samples[-1].append((ext, m.offset_data, m.size, m.name))
    return dali_index_text(samples)


def write_dali_index(shard: Path) -> Path:
    path = shard.with_suffix(".idx")
    write_text_atomic(path, shard_index_text(shard))
    return path
