import io
import tarfile

import numpy as np
import pytest

from shardgen.schema import decode_npy, encode_npy
from shardgen.tarstream import TarFormatError, iter_members, iter_samples


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
