"""Fast `.npy` parsing for the loader: `np.load` re-parses the header dict with `ast` for every sample (~55 µs);
our embeddings share a handful of headers, so parsed headers are cached. Never unpickles: object dtypes and
pickled payloads are refused, as `np.load(allow_pickle=False)` would."""

from __future__ import annotations

import ast

import numpy as np

_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool, int]] = {}


def load_npy(data: bytes) -> np.ndarray:
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    major = data[6]
    if major == 1:
        hlen, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        hlen, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise ValueError(f"unsupported .npy version {major}")
    header = data[start:start + hlen]
    parsed = _HEADERS.get(header)
    if parsed is None:
        d = ast.literal_eval(header.decode("latin1"))
        dtype = np.dtype(d["descr"])
        if dtype.hasobject:
            raise ValueError("object arrays need pickle; refused")
        parsed = (dtype, tuple(d["shape"]), bool(d["fortran_order"]), start + hlen)
        if len(_HEADERS) < 256:
            _HEADERS[header] = parsed
    dtype, shape, fortran, offset = parsed
    count = int(np.prod(shape)) if shape else 1
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(f"npy payload has {len(data) - offset} bytes, header says {count * dtype.itemsize}")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
