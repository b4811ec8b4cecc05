"""Crafted tar input against the format layer's one tar reader: headers that claim more than the stream holds,
sizes in every tar encoding, pax records that would loop. Each input is built here, offline, and the test asserts
the outcome: a clear TarFormatError naming the offset, and no allocation near what a header claims."""

from __future__ import annotations

import io
import signal
import tarfile
import tracemalloc

import pytest

from shardgen.format import TarFormatError, iter_samples, tarwalk
from shardgen.format.tarheader import BLOCK

GIB = 1 << 30


def _header(name: bytes, size_field: bytes, kind: bytes = b"0") -> bytes:
    """A USTAR header with a raw 12-byte size field and a correct checksum."""
    h = bytearray(BLOCK)
    h[:len(name)] = name
    h[100:108], h[108:116], h[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    h[124:136] = size_field
    h[136:148] = b"00000000000\0"
    h[156:157] = kind
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _octal(n: int) -> bytes:
    return b"%011o\0" % n


def _base256(n: int) -> bytes:
    return b"\x80" + n.to_bytes(11, "big")


def _member(name: str, data: bytes) -> bytes:
    return _header(name.encode(), _octal(len(data))) + data + bytes(-len(data) % BLOCK)


def _hostile_shard(claim_field: bytes, *, before: int = 1_000_000, after: int = 5_600_000) -> bytes:
    """~6.6 MB: honest members, then one whose header claims `claim_field` bytes, then what is really left (more
    than a read window, so the reader must decide before the stream ends)."""
    honest = b"".join(_member(f"{i:012d}.jpg", bytes(500_000)) for i in range(before // 500_000))
    return honest + _header(b"000000000099.jpg", claim_field) + bytes(after)


class _Stream(io.RawIOBase):
    """A stream that cannot seek or tell its length (a socket, an HTTP body)."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._src.readinto(b)


@pytest.fixture
def no_big_buffers(monkeypatch):
    """The tar reader must not even ask for a buffer near a header's claim: fail fast instead of touching GiBs."""
    real = bytearray

    def guarded(*args):
        if args and isinstance(args[0], int) and args[0] > 64 << 20:
            raise AssertionError(f"asked for a {args[0]}-byte buffer")
        return real(*args)

    monkeypatch.setattr(tarwalk, "bytearray", guarded, raising=False)


def _peak_while(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("zero_copy", [False, True])
def test_member_claiming_4_gib_in_a_local_file_is_refused_by_the_file_length(tmp_path, no_big_buffers, zero_copy):
    data = _hostile_shard(_octal(4 * GIB))
    path = tmp_path / "claims.tar"
    path.write_bytes(data)

    def read():
        with open(path, "rb") as fh, pytest.raises(TarFormatError, match=r"claims 4294967296 bytes, only \d+ left"):
            list(iter_samples(fh, zero_copy=zero_copy))

    assert _peak_while(read) < 24 << 20  # the file is 6.6 MB; the claim 4 GiB


def test_member_claiming_4_gib_in_a_stream_grows_only_with_what_arrives(no_big_buffers):
    data = _hostile_shard(_octal(4 * GIB))

    def read():
        with pytest.raises(TarFormatError, match=r"truncated .*claims 4294967296 bytes"):
            list(iter_samples(_Stream(data)))

    assert _peak_while(read) < 4 * len(data)


def test_a_large_honest_member_still_reads_from_a_stream():
    """Growing as bytes arrive still reads a member larger than several windows."""
    big = bytes(range(256)) * (9 * (1 << 20) // 256 + 7)
    data = _member("000000000001.jpg", big) + _member("000000000001.txt", b"t") + bytes(2 * BLOCK)
    [(key, fields)] = list(iter_samples(_Stream(data)))
    assert key == "000000000001" and fields["jpg"] == big and fields["txt"] == b"t"


def test_gnu_base256_sizes_are_read_like_tarfile():
    payload = bytes(range(200)) * 3
    data = _header(b"000000000001.jpg", _base256(len(payload))) + payload + bytes(-len(payload) % BLOCK)
    data += _member("000000000001.txt", b"x") + bytes(2 * BLOCK)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        expected = {m.name: t.extractfile(m).read() for m in t}
    [(key, fields)] = list(iter_samples(io.BytesIO(data)))
    assert {f"{key}.{ext}": bytes(v) for ext, v in fields.items()} == expected
    assert len(fields["jpg"]) == 600


def test_a_9_gib_base256_claim_is_read_as_9_gib_and_refused(no_big_buffers):
    nine = 9 * GIB
    with pytest.raises(TarFormatError, match=f"claims {nine} bytes"):  # not 576: the field is read whole
        list(iter_samples(io.BytesIO(_hostile_shard(_base256(nine)))))
    with pytest.raises(TarFormatError, match=f"claims {nine} bytes"):  # and in the last window
        list(iter_samples(io.BytesIO(_hostile_shard(_base256(nine), after=1000))))
    negative = b"\xff" * 12
    with pytest.raises(TarFormatError, match="bad size field"):
        list(iter_samples(io.BytesIO(_hostile_shard(negative))))


@pytest.mark.parametrize("field", [b"-0000000001\0", b"0000000_001\0", b"00000008000\0", b"0x000000010\0"])
def test_size_fields_that_are_not_octal_are_refused(field):
    data = _member("000000000001.jpg", b"a") + _header(b"000000000001.txt", field) + bytes(4 * BLOCK)
    with pytest.raises(TarFormatError, match="bad size field at byte 1024"):
        list(iter_samples(io.BytesIO(data)))


def _pax_entry(records: bytes) -> bytes:
    return _header(b"././@PaxHeader", _octal(len(records)), kind=b"x") + records + bytes(-len(records) % BLOCK)


@pytest.fixture
def within_5_seconds():
    def timeout(*_):
        raise TimeoutError("the tar reader loops")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("records", [b"0 path=x\n", b"5 a=b\n", b"99 path=x\n", b"x path=x\n", b"nospace",
                                     b"19 size=notanumber\n", b"7 \xff\xfe=x\n"])
def test_malformed_pax_records_are_refused(records, within_5_seconds):
    data = _pax_entry(records) + _member("000000000001.jpg", b"a") + bytes(2 * BLOCK)
    with pytest.raises(TarFormatError, match="pax"):
        list(iter_samples(io.BytesIO(data)))
