import io
import tarfile

import numpy as np
import pytest

from shardgen.format import TarFormatError, decode_npy, encode_npy, iter_samples
from shardgen.format.tarwalk import UstarMembers, iter_chunks


def iter_members(fh):
    """The member walk under the sample reader, flattened: (name, content) per regular file."""
    for chunk in iter_chunks(fh):
        for name, data in chunk.members() if isinstance(chunk, UstarMembers) else chunk:
            yield name.decode("utf-8", "surrogateescape"), data


def _tar(names, fmt):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name in names:
            data = name.encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        d = tarfile.TarInfo("somedir")
        d.type = tarfile.DIRTYPE
        t.addfile(d)  # not a file: skipped by both readers
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_reader_agrees_with_tarfile(fmt):
    names = ["a" * 120 + "/k1.jpg", "a" * 120 + "/k1.txt", "ü-key.json", "k2.tar.gz", "plain"]
    if fmt == tarfile.USTAR_FORMAT:
        names = [n for n in names if len(n) < 100 and n.isascii()]
    data = _tar(names, fmt)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        expected = [(m.name, t.extractfile(m).read()) for m in t if m.isfile()]
    assert list(iter_members(io.BytesIO(data))) == expected
    samples = list(iter_samples(io.BytesIO(data)))
    if fmt != tarfile.USTAR_FORMAT:  # the long-name sample groups its two members under one key
        assert samples[0] == ("a" * 120 + "/k1", {"jpg": names[0].encode(), "txt": names[1].encode()})
    assert ("k2", {"tar.gz": b"k2.tar.gz"}) in samples and ("plain", {"": b"plain"}) in samples


def test_corruption_is_detected():
    data = _tar(["k.jpg", "k.txt"], tarfile.USTAR_FORMAT)
    edited = bytearray(data)
    edited[130] ^= 0x01  # inside the first header's size field
    with pytest.raises(TarFormatError, match="checksum"):
        list(iter_members(io.BytesIO(bytes(edited))))
    with pytest.raises(TarFormatError, match="truncated"):
        list(iter_members(io.BytesIO(data[:700])))


def test_npy_round_trip_and_pickle_refused():
    for a in (np.random.rand(5, 512).astype(np.float16), np.asfortranarray(np.random.rand(3, 4)), np.float32(3)):
        assert np.array_equal(decode_npy(encode_npy(np.asarray(a))), np.asarray(a))
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="refused"):
        decode_npy(buf.getvalue())
    with pytest.raises(ValueError, match="payload"):
        decode_npy(encode_npy(np.zeros((2, 3)))[:-8])


def _reference(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [(m.name, t.extractfile(m).read()) for m in t if m.isfile()]


@pytest.mark.parametrize("chunk", [1024, 4096, 1 << 22])
@pytest.mark.parametrize("zero_copy", [False, True])
def test_fast_walk_windows_and_zero_copy_agree_with_tarfile(tmp_path, monkeypatch, chunk, zero_copy):
    """Members straddling read windows, a data block that happens to hold the "ustar" magic, and the memory-mapped
    zero-copy path all give tarfile's answer."""
    import shardgen.format.tarwalk as ts

    monkeypatch.setattr(ts, "CHUNK", chunk)
    rng = np.random.default_rng(0)
    decoy = bytearray(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    decoy[512 + 257:512 + 262] = b"ustar"  # a data block that looks like a header at a block boundary
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for i in range(20):
            for ext, data in (("jpg", bytes(decoy) if i == 7 else rng.bytes(int(rng.integers(0, 5000)))),
                              ("json", b"{}"), ("npy", rng.bytes(700))):
                ti = tarfile.TarInfo(f"{i:012d}.{ext}")
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    path = tmp_path / "s.tar"
    path.write_bytes(buf.getvalue())
    expected = _reference(buf.getvalue())
    with open(path, "rb") as fh:
        samples = list(iter_samples(fh, zero_copy=zero_copy))
    got = [(f"{key}.{ext}", bytes(data)) for key, fields in samples for ext, data in fields.items()]
    assert got == expected
    if zero_copy:
        assert isinstance(samples[0][1]["jpg"], memoryview)
    with open(path, "rb") as fh:
        assert list(iter_members(fh)) == expected


@pytest.mark.parametrize("zero_copy", [False, True])
def test_corruption_is_detected_on_the_fast_path(tmp_path, zero_copy):
    """A bad header deep inside a large shard: earlier members are yielded, then the error names the offset."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for i in range(50):
            ti = tarfile.TarInfo(f"{i:04d}.bin")
            ti.size = 600
            t.addfile(ti, io.BytesIO(bytes([i]) * 600))
    data = bytearray(buf.getvalue())
    data[30 * 1536 + 5] ^= 0x20  # a name byte of member 30's header (each member: header + 2 blocks)
    path = tmp_path / "bad.tar"
    path.write_bytes(bytes(data))
    got = []
    with open(path, "rb") as fh, pytest.raises(TarFormatError, match=f"checksum at byte {30 * 1536}"):
        for name, content in iter_members(fh) if not zero_copy else (
                (f"{k}.bin", f["bin"]) for k, f in iter_samples(fh, zero_copy=True)):
            got.append(name)
    # members before the bad header; grouped samples end one earlier (a sample is complete when the next begins)
    assert got == [f"{i:04d}.bin" for i in range(29 if zero_copy else 30)]
    path.write_bytes(bytes(buf.getvalue()[:40 * 1536 + 700]))  # cut inside member 40's data
    with open(path, "rb") as fh, pytest.raises(TarFormatError, match="truncated"):
        list(iter_samples(fh, zero_copy=zero_copy))


def _reference_samples(data: bytes) -> list[tuple[str, dict[str, bytes]]]:
    from shardgen.format import split_member_name

    samples: list[tuple[str, dict[str, bytes]]] = []
    for name, content in _reference(data):
        key, ext = split_member_name(name)
        if not samples or samples[-1][0] != key:
            samples.append((key, {}))
        samples[-1][1][ext] = content
    return samples


@pytest.mark.parametrize("chunk", [1024, 4096, 1 << 22])
@pytest.mark.parametrize("zero_copy", [False, True])
@pytest.mark.parametrize("odd", [["000030.jpg", "000030.npy", "31.jpg", "31.json", "0032.jpg", "0032.jpg",
                                  "000034.jpg", "000034.json", "000034.jpg", "000034.json"],
                                 ["d/x.y/000033.jpg", "d/x.y/000033.json", "noext"]])
def test_sample_groups_agree_with_tarfile(tmp_path, monkeypatch, chunk, zero_copy, odd):
    """Runs of regular samples become columnar groups; irregular ones (a missing or repeated extension, keys of
    other lengths, a key repeated; folders, no extension) still group exactly like webdataset's rule."""
    import shardgen.format.tarwalk as ts
    from shardgen.format import iter_sample_groups

    monkeypatch.setattr(ts, "CHUNK", chunk)
    rng = np.random.default_rng(1)
    names = [f"{i:06d}.{e}" for i in range(30) for e in ("jpg", "json", "npy")]
    names += odd + [f"{i:06d}.{e}" for i in range(35, 60) for e in ("jpg", "json", "npy")]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name in names:
            data = rng.bytes(int(rng.integers(0, 1500)))
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    path = tmp_path / "g.tar"
    path.write_bytes(buf.getvalue())
    with open(path, "rb") as fh:
        groups = list(iter_sample_groups(fh, zero_copy=zero_copy))
    got = [(key, {e: bytes(c[i]) for e, c in fields.items()}) for keys, fields in groups for i, key in enumerate(keys)]
    assert got == _reference_samples(buf.getvalue())
    assert all(len(c) == len(keys) for keys, fields in groups for c in fields.values())
    if chunk == 1 << 22 and "/" not in odd[0]:  # one window: the regular runs come as groups of many samples
        assert max(len(keys) for keys, _ in groups) >= 24
