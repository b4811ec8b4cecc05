"""The DALI `.idx` index beside a shard (format `v1.2`, as NVIDIA's `wds2idx.py` writes): a header line
`v1.2 <n_samples>`, then one line per sample listing `ext offset size name` for each member, where offset is where
the member's data starts. `shardgen build` writes it (`build.writer` from its own offsets, `build.dali` by walking
a tar); the loader parses it to seek inside shards (`loaders.seek`)."""

from __future__ import annotations

DALI_INDEX_VERSION = "v1.2"

Member = tuple[str, int, int, str]  # ext, offset of its data, size, member name


def dali_index_text(samples: list[list[Member]]) -> str:
    """The index file's text: one list of members per sample, in tar order."""
    lines = (" ".join(f"{ext} {offset} {size} {name}" for ext, offset, size, name in members) + "\n"
             for members in samples)
    return f"{DALI_INDEX_VERSION} {len(samples)}\n" + "".join(lines)
