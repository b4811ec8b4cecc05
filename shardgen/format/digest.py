"""File checksums: one pass over a file feeds every digest asked for (the writer's sha256, download's MD5 check,
upload's MD5-for-ETag plus sha256). Standard library only.
"""

from __future__ import annotations

import hashlib
import os

CHUNK_BYTES = 8 << 20


def file_digests(path: str | os.PathLike, *algorithms: str, chunk: int = CHUNK_BYTES) -> tuple[str, ...]:
    """Hex digests of the file at `path`, one per name in `algorithms` (hashlib names: "sha256", "md5"), in that
    order, reading the file once."""
    if not algorithms:
        raise ValueError("file_digests needs at least one algorithm name")
    # usedforsecurity=False: MD5 only compares against published checksums and store ETags (FIPS builds allow it).
    hashes = [hashlib.new(name, usedforsecurity=False) for name in algorithms]
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            for h in hashes:
                h.update(block)
    return tuple(h.hexdigest() for h in hashes)
