"""DALI `.idx` index files, one per shard (format `v1.2`, as NVIDIA's `wds2idx.py` writes): a header line
`v1.2 <n_samples>`, then one line per sample listing `ext offset size name` for each member, where offset is where
the member's data starts. Written beside each shard by `shardgen build` (on by default; `--no-dali-index` skips it);
the loader seeks inside shards with it (`loaders.seek`)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from ..format import split_member_name
from .writer import DALI_INDEX_VERSION, write_text_atomic



def dali_index_text(shard: Path) -> str:
    """The DALI index for one local shard."""
    samples: list[list[str]] = []
    last = None
    with tarfile.open(shard) as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, ext = split_member_name(m.name)
            if key != last:
                samples.append([])
                last = key
            samples[-1].append(f"{ext} {m.offset_data} {m.size} {m.name}")
    return f"{DALI_INDEX_VERSION} {len(samples)}\n" + "".join(" ".join(s) + "\n" for s in samples)


def write_dali_index(shard: Path) -> Path:
    path = shard.with_suffix(".idx")
    write_text_atomic(path, dali_index_text(shard))
    return path
