"""Tar headers, read exactly: numeric fields (octal, GNU base-256), checksums (one at a time, or for many
headers at once with numpy), pax records and GNU long names, and the header-by-header walk of a window that
`tarwalk` falls back to for anything but plain USTAR (pax, long names, directories, links, damage). Every
malformed field raises `TarFormatError` naming its byte offset in the stream.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .errors import TarFormatError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (ord("0"), 0, ord("7"))


def parse_number(field: bytes) -> int:
    """A numeric header field (size, checksum) as tarfile reads it: octal digits up to the first NUL, or GNU
    base-256 (first byte 0x80) for sizes of 8 GiB and more. Negative numbers (first byte 0xff) are refused."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise TarFormatError(f"negative number {field!r}")
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if digits.strip(b"01234567"):
        raise TarFormatError(f"bad octal field {field!r}")
    return int(digits, 8) if digits else 0


def _pax(data: bytes, at: int) -> dict[str, str]:
    """The records of a pax header (`<length> <key>=<value>\\n` each) that starts at byte `at`."""
    out, pos = {}, 0
    try:
        while pos < len(data):
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            if length <= space - pos or pos + length > len(data):  # each record moves on, and stays inside
                raise ValueError(f"record length {length}")
            key, _, value = data[space + 1: pos + length - 1].partition(b"=")
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
            pos += length
    except ValueError as exc:  # a missing space, a length that is no number, a key that is not UTF-8
        raise TarFormatError(f"bad pax header at byte {at} ({exc})") from None
    return out


def checksum_ok(header: bytes) -> bool:
    try:
        stored = parse_number(header[148:156])
    except TarFormatError:
        return False
    return stored == sum(header) - sum(header[148:156]) + 8 * 32


OCTAL_WEIGHTS = 8 ** np.arange(10, -1, -1, dtype=np.int64)


def checksums_match(hdr: np.ndarray) -> np.ndarray:
    """For each header of `hdr` ([n, 512] uint8), whether its stored checksum equals the computed one, in one numpy
    pass (summing 512 bytes in Python costs ~3 µs a header). Callers recheck a mismatch exactly (`checksum_ok`)."""
    field = hdr[:, 148:156].astype(np.int64)
    computed = hdr.sum(axis=1, dtype=np.uint32).astype(np.int64) - field.sum(axis=1) + 8 * 32
    digits = field[:, :6] - 48
    if ((field[:, 6] == 0) & (field[:, 7] == 32)).all() and ((digits >= 0) & (digits <= 7)).all():
        stored = digits @ OCTAL_WEIGHTS[-6:]  # the usual "%06o\0 "
    else:
        stored = np.zeros(len(hdr), dtype=np.int64)
        for col in field.T:  # octal digits; the terminator (NUL or space) and leading spaces are skipped
            stored = np.where((col >= 48) & (col <= 55), stored * 8 + col - 48, stored)
    return stored == computed


def _first_bad_checksum(buf, n: int, positions: list[int]) -> int:
    """Index into `positions` (block-aligned header offsets in `buf`) of the first header whose checksum is
    wrong, or -1."""
    if not positions:
        return -1
    blocks = np.frombuffer(buf, dtype=np.uint8, count=n // BLOCK * BLOCK).reshape(-1, BLOCK)
    for i in np.flatnonzero(~checksums_match(blocks[np.asarray(positions) // BLOCK])):
        p = positions[int(i)]
        if not checksum_ok(bytes(buf[p:p + BLOCK])):
            return int(i)
    return -1


class Step(NamedTuple):
    """What a walk of one window found: its members, where it stopped, the bytes needed from there to go on
    (0: a window's worth), whether the end-of-archive marker was seen, and what is wrong at the stop (None:
    nothing)."""

    members: list[tuple[bytes, bytes]] | Sequence  # (raw name, content) pairs, or a `tarwalk.UstarMembers`
    pos: int
    need: int
    stop: bool
    error: str | None = None


class Carry:
    """What a pax or GNU long-name entry says about the member after it (which may be in the next window)."""

    def __init__(self) -> None:
        self.long_name: bytes | None = None
        self.pax: dict[str, str] = {}

    @property
    def empty(self) -> bool:
        return self.long_name is None and not self.pax

    def clear(self) -> None:
        self.long_name, self.pax = None, {}

    def name_for(self, size: int, at: int) -> bytes | None:
        """The name these entries give the regular member at byte `at` of `size` bytes (None: its own)."""
        if self.empty:
            return None
        pax, long_name = self.pax, self.long_name
        self.clear()
        if "size" in pax and _int_or_none(pax["size"]) != size:
            raise TarFormatError(f"pax size mismatch at byte {at}")
        return pax["path"].encode("utf-8", "surrogateescape") if "path" in pax else long_name


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _entry(buf: bytes, hp: int, size: int, carry: Carry, at: int) -> bytes | None:
    """The name of the regular member whose header is at buf[hp]; None for other entries, which update `carry`
    (pax, long names) or are skipped (directories, links, ...)."""
    kind = buf[hp + 156]
    data = slice(hp + BLOCK, hp + BLOCK + size)
    if kind in _REGULAR:
        name = carry.name_for(size, at)
        if name is not None:
            return name
        cut = buf.find(b"\0", hp, hp + 100)
        name = buf[hp:cut if cut >= 0 else hp + 100]
        if buf[hp + 345] != 0 and buf[hp + 257:hp + 262] == b"ustar":
            cut = buf.find(b"\0", hp + 345, hp + 500)
            name = buf[hp + 345:cut if cut >= 0 else hp + 500] + b"/" + name
        return bytes(name)
    if kind == ord("x"):
        carry.pax = _pax(bytes(buf[data]), at)
    elif kind == ord("L"):
        carry.long_name = bytes(buf[data]).rstrip(b"\0")
    elif kind != ord("g"):
        carry.clear()
    return None


def _member_end(buf: bytes, pos: int, n: int, eof: bool, at: int) -> tuple[int, int]:
    """(size, end of the padded content) of the member whose header is at buf[pos]; raises `TarFormatError`
    naming byte `at` (its offset in the stream) for a bad size field, or a member cut short by the end of the
    stream."""
    try:
        size = parse_number(buf[pos + 124:pos + 136])
    except TarFormatError as exc:
        raise TarFormatError(f"bad size field at byte {at} ({exc})") from None
    after = pos + BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK
    if after > n and eof:
        raise TarFormatError(f"truncated at byte {at - pos + n} (member at byte {at} claims {size} bytes, "
                             f"only {max(n - pos - BLOCK, 0)} left)")
    return size, after


def walk_exact(buf: bytes, n: int, eof: bool, base: int, carry: Carry) -> Step:
    """The header-by-header walk of buf[:n] (stream offset `base`): pax, GNU long names, other entry kinds, and
    exact reasons for anything malformed. A header whose checksum is wrong explains anything odd after it."""
    view = memoryview(buf)
    members, owners, headers = [], [], []  # owners: the header index of each member
    pos, need, stop, error = 0, 0, False, None
    while pos + BLOCK <= n:
        if buf[pos + 156] == 0 and buf[pos:pos + BLOCK] == ZERO_BLOCK:  # end-of-archive marker
            stop = True
            break
        headers.append(pos)
        try:
            size, after = _member_end(buf, pos, n, eof, base + pos)
            if after > n:  # goes on in the next window; trust its size only from a sound header
                if not checksum_ok(bytes(buf[pos:pos + BLOCK])):
                    raise TarFormatError(f"bad header checksum at byte {base + pos}")
                headers.pop()
                need = after - pos
                break
            name = _entry(buf, pos, size, carry, base + pos)
        except TarFormatError as exc:
            error = (len(headers) - 1, str(exc))
            break
        if name is not None:
            members.append((name, bytes(view[pos + BLOCK:pos + BLOCK + size])))
            owners.append(len(headers) - 1)
        pos = after
    bad = _first_bad_checksum(buf, n, headers)
    if bad >= 0:
        error = (bad, f"bad header checksum at byte {base + headers[bad]}")
    if error is None:
        return Step(members, pos, need, stop)
    return Step(members[:bisect.bisect_left(owners, error[0])], pos, need, stop, error[1])
