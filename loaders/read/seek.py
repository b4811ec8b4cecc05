"""Where a sample starts inside a shard, from the shard's index, so a span that starts inside a shard opens it
there (a local seek, an HTTP Range request, S3's ranged reads) instead of reading through the samples before it.

The index is the DALI `v1.2` `.idx` file beside the shard (`shardgen build` writes it by default): a
header `v1.2 <n_samples>`, then one line per sample with `ext offset size name` per member, offset being where the
member's data starts. Sample i + 1 starts where sample i's last member ends, rounded up to the 512-byte tar block:
there its first header begins, so headers of any kind (pax, GNU long names) are read as usual. Without an index
(a build with `--no-dali-index`, another tool's shards) the reader reads through, as a stream reader must.

An index is read once per process and shard URL. One that does not fit its shard (another sample count, a line
that does not parse, a key other than the one found at its offset) is bad data: `LoaderError` naming the index.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from shardgen.format import SchemaError, client_errors, read_text, redact, split_member_name
from shardgen.format.dali_index import index_name, parse_dali_index
from shardgen.format.tarheader import BLOCK

from ..errors import LoaderError

log = logging.getLogger("loaders")
_CACHE_LIMIT = 4096  # shard URLs whose index (or its absence) a process remembers


class ShardIndex(NamedTuple):
    """`starts[i]`: the byte where sample i's first header starts; `keys[i]`: its key."""

    url: str  # the index file's
    starts: list[int]
    keys: list[str]


_cache: dict[str, ShardIndex | None] = {}


index_url = index_name  # the index file of a shard URL: `<name>.idx` beside `<name>.tar`


def parse_index(text: str, *, url: str) -> ShardIndex:
    """A DALI v1.2 index's sample starts and keys. Raises LoaderError naming `url`."""
    try:
        samples = parse_dali_index(text)
    except SchemaError as exc:
        raise LoaderError(f"{redact(url)}: {exc}") from None
    starts, keys = [0], []
    for n, members in enumerate(samples, start=2):
        offsets = [offset for _, offset, _, _ in members]
        if min(offsets) <= starts[-1]:  # samples lie in index order, each after the one before
            raise LoaderError(f"{redact(url)}: line {n}: member data at byte {min(offsets)}, not after the "
                              f"previous sample (which ends at byte {starts[-1]})")
        starts.append(max(offset + -(-size // BLOCK) * BLOCK for _, offset, size, _ in members))
        keys.append(split_member_name(members[0][3])[0])
    return ShardIndex(url, starts, keys)


def load_index(shard_url: str, *, count: int, storage_options: dict) -> ShardIndex | None:
    """The index of the shard at `shard_url` (which holds `count` samples by its manifest), or None when it has
    none. A failed read of a remote index is not remembered: the next span tries again."""
    if shard_url in _cache:
        return _cache[shard_url]
    url = index_url(shard_url)
    try:
        index = parse_index(read_text(url, **storage_options), url=url)
    except FileNotFoundError:
        index = None
    except client_errors() as exc:  # the index only saves reading: read through this time
        log.warning("%s: %s; reading the shard from its start", redact(url), redact(str(exc)))
        return None
    if index is not None and len(index.keys) != count:
        raise LoaderError(f"{redact(url)}: indexes {len(index.keys)} samples, the manifest says the shard holds "
                          f"{count}; rebuild the index (rerun shardgen build on the folder) or delete it")
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[shard_url] = index
    return index


def check_landing(index: ShardIndex, sample: int, key: str) -> None:
    """After seeking to `sample`, the key found there must be the one the index names."""
    if key != index.keys[sample]:
        raise LoaderError(f"{redact(index.url)}: sample {sample} is {index.keys[sample]} by the index, but "
                          f"{key} at byte {index.starts[sample]} of the shard: the index does not fit its shard; "
                          "rebuild it (rerun shardgen build on the folder) or delete it")
