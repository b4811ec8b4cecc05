"""The DALI `.idx` index beside a shard (format `v1.2`, as NVIDIA's `wds2idx.py` writes): a header line
`v1.2 <n_samples>`, then one line per sample listing `ext offset size name` for each member, where offset is where
the member's data starts. `shardgen build` writes it (`build.writer` from its own offsets, `build.dali` by walking
a tar: `index_members`); the loader parses it to seek inside shards (`loaders.read.seek`) and `shardgen verify` checks
it against its tar (`parse_dali_index` both)."""

from __future__ import annotations

import tarfile
from typing import IO

from .errors import SchemaError
from .names import parse_decimal

DALI_INDEX_VERSION = "v1.2"

Member = tuple[str, int, int, str]  # ext, offset of its data, size, member name


def index_name(shard: str) -> str:
    """The index beside a shard (a name, path or URL): `<name>.idx` for `<name>.tar`, as `shardgen build` writes it."""
    return shard.removesuffix(".tar") + ".idx"


def dali_index_text(samples: list[list[Member]]) -> str:
    """The index file's text: one list of members per sample, in tar order."""
    lines = (" ".join(f"{ext} {offset} {size} {name}" for ext, offset, size, name in members) + "\n"
             for members in samples)
    return f"{DALI_INDEX_VERSION} {len(samples)}\n" + "".join(lines)


def parse_dali_index(text: str) -> list[list[Member]]:
    """The members of each sample an index lists, in its order. Raises `SchemaError` saying what does not parse
    (the header, or `line N`); offsets and sizes are ASCII digits (`²` is no number, whatever `isdigit` says)."""
    lines = text.splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or head[0] != DALI_INDEX_VERSION or parse_decimal(head[1]) != len(lines) - 1:
        raise SchemaError(f"not a DALI {DALI_INDEX_VERSION} index (header {lines[0][:40] if lines else ''!r} does "
                          f"not match its {max(len(lines) - 1, 0)} sample lines)")
    samples = []
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split()
        numbers = [parse_decimal(x) for x in fields[1::4] + fields[2::4]]
        if not fields or len(fields) % 4 or None in numbers:
            raise SchemaError(f"line {n}: expected `ext offset size name` per member")
        samples.append([(ext, int(offset), int(size), name)
                        for ext, offset, size, name in zip(fields[::4], fields[1::4], fields[2::4], fields[3::4])])
    return samples


def tiles(samples: list[list[Member]], data: bytes) -> bool:
    """Whether `samples` (a parsed index) lists exactly the members of the tar `data`, checked the quick way:
    each member's plain USTAR header (checksum, regular file, name, size) lies right before its data, the
    headers follow each other with nothing between, and the end-of-archive marker follows the last. False means
    "not shown" (pax headers, long names, a lie): compare with `index_members` then. ~20× faster than that walk
    (tarfile builds an object per member)."""
    from .errors import FormatError
    from .tar import split_member_name
    from .tarheader import BLOCK, ZERO_BLOCK, checksum_ok, parse_number

    view = memoryview(data)
    pos, last = 0, None
    for members in samples:
        keys = {split_member_name(name)[0] for _, _, _, name in members}
        if len(keys) != 1 or keys == {last}:  # a sample is the run of members with one key, as the builder groups
            return False
        last = keys.pop()
        for _, offset, size, name in members:
            header = bytes(view[pos:pos + BLOCK])
            if offset != pos + BLOCK or len(header) < BLOCK or not checksum_ok(header) \
                    or header[156] not in (0, 48) or header[345] != 0:
                return False
            try:
                if parse_number(header[124:136]) != size:
                    return False
            except FormatError:
                return False
            if header[:100].split(b"\0", 1)[0] != name.encode("utf-8", "surrogateescape"):
                return False
            pos = offset + -(-size // BLOCK) * BLOCK
    return bytes(view[pos:pos + BLOCK]) == ZERO_BLOCK


def index_members(fileobj: IO[bytes]) -> list[list[Member]]:
    """What the index of the tar `fileobj` lists: its regular members grouped by sample key, in tar order. Raises
    `tarfile.TarError` for a tar that does not parse."""
    from .tar import split_member_name

    samples: list[list[Member]] = []
    last = None
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, ext = split_member_name(m.name)
            if key != last:
                samples.append([])
                last = key
            samples[-1].append((ext, m.offset_data, m.size, m.name))
    return samples
