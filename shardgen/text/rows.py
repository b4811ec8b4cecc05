"""The caption cache's plain files, what a build reads instead of the `.pt` (`cache.py` keeps the `.pt` and the
encoding), and `CaptionEmbeddings`, the memory-mapped view a build and its shard tasks read:

- `<cache>.rows.npy`: the embeddings, `[R, D]` float16, in the `.pt`'s text order (bit for bit its embeddings);
- per listing served (an input, or a `--limit` of it), `<cache>.order-<h>.npy` (int64, each caption's row, in the
  listing's order), `<cache>.order-<h>.truncated.npy` (the captions encoded from their first 77 tokens, by index)
  and `<cache>.order-<h>.key` (JSON, written last: the encoder's fingerprint, the captions' sha256 whose first 16
  digits are `<h>`, and the size, mtime and inode of the rows file it was made for, so a rewritten rows file
  makes every key stale); where the cache's folder is read-only they go to the build's folder;
- `<cache>.rows.partial.npy`: a cold cache's rows, written as its chunks are encoded.

None of it is pickled; every file is checked before it is trusted (regular file, shape, dtype, indexes in range,
the key) and written whole or not at all.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import UserError
from ..sources.listing import Listing


@dataclass
class CaptionEmbeddings:
    """Every caption of a listing with its embedding: caption k's is row `order[k]` of `table` (both memory-mapped
    from the cache's files, which a task on this machine reads itself)."""

    text_encoder: str
    random_init: bool
    table: np.ndarray  # [R, D] float16, L2-normalized rows (D: the tower's width)
    order: np.ndarray  # int64 [C]: each caption's row, in the listing's order
    truncated: np.ndarray  # int64: the captions (indices into the listing's) longer than 77 tokens
    rows_file: Path | None = None  # `table`'s file (`rows_path`)
    order_file: Path | None = None  # `order`'s file (`listing_files(...).order`)

    @property
    def width(self) -> int:
        return int(self.table.shape[1])

    def rows(self, start: int, stop: int) -> np.ndarray:
        """`[stop - start, D]` float16: the embeddings of captions start..stop-1 of the listing (one gather)."""
        return np.ascontiguousarray(self.table[np.asarray(self.order[start:stop])])


def rows_path(cache: Path) -> Path:
    """The cache's rows as a plain `.npy` beside it (`<cache>.rows.npy`, the `.pt`'s embeddings in its order), so a
    shard task reads only the rows its samples need instead of receiving them from the driver."""
    return cache.with_name(cache.name + ".rows.npy")


class ListingFiles(NamedTuple):
    """Where the cache keeps one listing's view of it (`<cache>.order-<its captions' sha256, 16 digits>.*`)."""

    order: Path  # int64 [C]: each caption's row of the rows file, in the listing's order
    truncated: Path  # int64: the captions (indices) encoded from their first 77 tokens
    key: Path  # JSON: the encoder's fingerprint, the captions' sha256, the rows file it was made for; written last


def listing_files(folder: Path, cache: Path, digest: str) -> ListingFiles:
    """The files of the listing whose captions' sha256 is `digest`, for `cache`, in `folder`."""
    stem = f"{cache.name}.order-{digest[:16]}"
    return ListingFiles(folder / f"{stem}.npy", folder / f"{stem}.truncated.npy", folder / f"{stem}.key")


def stamp(path: Path) -> list[int]:
    """What tells a rewritten rows file from the one a key was made for."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def partial_rows(cache: Path) -> Path:
    """Where a cold cache's rows are written as their chunks are encoded, before the `.pt` is whole."""
    return cache.with_name(cache.name + ".rows.partial.npy")


def save_rows(path: Path, rows: np.ndarray) -> None:
    from ..format import open_atomic

    _refuse_other_kind(path)
    with open_atomic(path) as fh:
        np.save(fh, rows, allow_pickle=False)


def load_rows(path: Path, shape: tuple[int, ...], dtype=np.float16) -> np.ndarray | None:
    """A file of the cache memory-mapped, or None when it is missing, no regular file, or not of this `shape` and
    `dtype` (then it is written again)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would hang the read
            return None
        rows = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return rows if rows.dtype == dtype and rows.shape == shape else None


def _refuse_other_kind(path: Path) -> None:
    """One line for a folder where a file of the cache goes (a FIFO or a file is replaced whole)."""
    if path.is_dir():
        raise UserError(f"{path}: a folder where the caption cache keeps a file; remove it or name another "
                        "--embeddings-cache")


def indexes(values: np.ndarray, n: int) -> bool:
    """Whether every value indexes an array of `n` (a negative one would wrap: another row, silently); read in
    pieces, so a memory-mapped order of every caption is never copied whole."""
    step = 1 << 24
    return all(len(piece) == 0 or (int(piece.min()) >= 0 and int(piece.max()) < n)
               for piece in (values[i:i + step] for i in range(0, len(values), step)))


def same_rows(path: Path, table: torch.Tensor) -> bool:
    """Whether the rows file holds the `.pt`'s embeddings bit for bit (its shape alone does not say: a `.pt`
    copied over the cache leaves another rows file of the same shape beside it). Compared in pieces, only where
    the `.pt` is read anyway."""
    rows = load_rows(path, tuple(table.shape))
    step = 1 << 16
    return rows is not None and all(
        np.asarray(rows[i:i + step]).tobytes() == table[i:i + step].to(torch.float16).numpy().tobytes()
        for i in range(0, len(rows), step))


def load_warm(cache: Path, text_encoder: str, fingerprint: str, listing: Listing,
               folders: tuple[Path, ...]) -> CaptionEmbeddings | None:
    """The cache's files for this very listing (its captions' sha256, the encoder's fingerprint and the rows file
    as its key recorded them), memory-mapped, from the first of `folders` holding them; None when none is whole
    and current."""
    digest = listing.captions_digest()
    for folder in folders:
        files = listing_files(folder, cache, digest)
        try:
            if not all(stat.S_ISREG(os.stat(f).st_mode) for f in (files.key, files.truncated)):  # a FIFO: a hang
                continue
            meta = json.loads(files.key.read_text())
            current = isinstance(meta, dict) and meta.get("fingerprint") == fingerprint \
                and meta.get("captions_sha256") == digest and meta.get("rows_file") == stamp(rows_path(cache))
            rows_shape = (int(meta["rows"]), int(meta["width"])) if current else None
            truncated = np.load(files.truncated, allow_pickle=False) if current else None
        except (OSError, ValueError, KeyError, TypeError, EOFError):
            continue
        if rows_shape is None or truncated.dtype != np.int64 or truncated.ndim != 1:
            continue
        table = load_rows(rows_path(cache), rows_shape)
        order = load_rows(files.order, (listing.n_captions,), np.int64)
        if table is not None and order is not None and indexes(order, len(table)) \
                and indexes(truncated, listing.n_captions):
            return CaptionEmbeddings(text_encoder, bool(meta.get("random_init")), table, order, truncated,
                                     rows_path(cache), files.order)
    return None


def save_order(cache: Path, listing: Listing, row: dict[str, int], truncated: set[str], *, shape: tuple[int, int],
                fingerprint: str, random_init: bool, folders: tuple[Path, ...]) -> None:
    """Write what `load_warm` reads for `listing`, its key last (the files it names are whole by then), in the
    first of `folders` that takes them (a read-only cache folder leaves them to the build's own)."""
    from ..format import open_atomic

    digest = listing.captions_digest()
    order = np.fromiter((row[c] for c in listing.captions), np.int64, listing.n_captions)
    cut = np.fromiter((k for k, c in enumerate(listing.captions) if c in truncated), np.int64) if truncated \
        else np.zeros(0, np.int64)
    meta = {"fingerprint": fingerprint, "captions_sha256": digest, "rows": shape[0], "width": shape[1],
            "random_init": random_init, "rows_file": stamp(rows_path(cache))}
    for i, folder in enumerate(folders):
        files = listing_files(folder, cache, digest)
        try:
            files.key.unlink(missing_ok=True)  # no key names files half rewritten
            save_rows(files.order, order)
            save_rows(files.truncated, cut)
            with open_atomic(files.key) as fh:
                fh.write(json.dumps(meta).encode())
            return
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or i == len(folders) - 1:
                raise


def allocated_rows(path: Path, shape: tuple[int, int]) -> np.memmap:
    """A `.npy` of float16 rows at `path`, memory-mapped for writing, its blocks allocated first: a full disk is
    an OSError (ENOSPC) here, not a SIGBUS when a mapped page is first written."""
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # a file system without it
                raise
    return rows
