"""DALI `.idx` index files (`format.dali_index`) for shards already on disk, by walking the tar: for shards the
writer did not index itself (resumed ones, a run with `--no-dali-index` before, `shardgen export`). Written beside
each shard by `shardgen build` (on by default; `--no-dali-index` skips it); the loader seeks inside shards with it
(`loaders.read.seek`)."""

from __future__ import annotations

from pathlib import Path

from ..format.dali_index import dali_index_text, index_members
from ..format import write_text_atomic


def shard_index_text(shard: Path) -> str:
    """The DALI index for one local shard."""
    with open(shard, "rb") as fh:
        return dali_index_text(index_members(fh))


def write_dali_index(shard: Path) -> Path:
    path = shard.with_suffix(".idx")
    write_text_atomic(path, shard_index_text(shard))
    return path
