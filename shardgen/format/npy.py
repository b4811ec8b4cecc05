""".npy members: written with `np.save(allow_pickle=False)`, read by a cached header parser (no pickle, ever).

Object dtypes are refused and every header is checked against the member's length, so a crafted member can
neither run code nor make a reader allocate more than the member holds.
"""

from __future__ import annotations

import io
import math

import numpy as np


def encode_npy(array: np.ndarray) -> bytes:
    """Serialize an embedding matrix as a .npy file loadable with `allow_pickle=False`."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool, int, int]] = {}  # header dict text, or the
# first 128 bytes of the file when that is exactly magic + version + length + header


def npy_layout(data) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, payload offset) of a .npy member, checked against its length; no pickle
    (object dtypes are refused, as `np.load(allow_pickle=False)` does). Raises ValueError on anything malformed.

    `np.load` re-parses the header dict with `ast` for every sample (~55 µs); embeddings share a handful of
    headers, so parsed headers are cached."""
    head = bytes(data[:128])  # the whole header of a version-1 file with a short header dict (ours: 128 bytes)
    parsed = _NPY_HEADERS.get(head)
    if parsed is not None and len(data) - parsed[3] == parsed[4]:
        return parsed[:4]
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    major = data[6]
    if major == 1:
        hlen, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        hlen, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise ValueError(f"unsupported .npy version {major}")
    header = bytes(data[start:start + hlen])
    parsed = _NPY_HEADERS.get(header)
    if parsed is None:
        dtype, shape, fortran = _parse_header(header)
        parsed = (dtype, shape, fortran, start + hlen, math.prod(shape) * dtype.itemsize)
        if len(_NPY_HEADERS) < 256:
            _NPY_HEADERS[header] = parsed
            if start + hlen == 128:  # also by the file's first 128 bytes: one lookup next time
                _NPY_HEADERS[bytes(data[:128])] = parsed
    dtype, shape, fortran, offset, nbytes = parsed
    if len(data) - offset != nbytes:
        raise ValueError(f"npy payload has {len(data) - offset} bytes, header says {nbytes}")
    return dtype, shape, fortran, offset


def _parse_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, fortran_order) from a header dict; raises ValueError("bad .npy header ...") on anything
    else than the dict `np.save` writes."""
    import ast

    try:
        d = ast.literal_eval(header.decode("latin1"))
        if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
            raise TypeError("not a dict of descr, fortran_order, shape")
        dtype = np.dtype(d["descr"])
        shape = d["shape"]
        if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
            raise TypeError(f"shape {shape!r:.40}")
        if not isinstance(d["fortran_order"], bool):
            raise TypeError("fortran_order is not a bool")
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:  # literal_eval's and
        raise ValueError(f"bad .npy header ({type(exc).__name__}: {exc})"[:200]) from None  # np.dtype's errors
    if dtype.hasobject:
        raise ValueError("object arrays need pickle; refused")
    return dtype, shape, d["fortran_order"]


def decode_npy(data) -> np.ndarray:
    """A .npy member as an array (a read-only view of `data`); see `npy_layout`."""
    dtype, shape, fortran, offset = npy_layout(data)
    arr = np.frombuffer(data, dtype=dtype, count=(len(data) - offset) // dtype.itemsize, offset=offset)  # checked
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
