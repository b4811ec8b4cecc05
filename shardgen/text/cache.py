"""Caption embeddings for a split, computed once and cached as `<split>_text_embeddings.pt` (the seed's file).

Captions are deduplicated by text; the cache stores each unique text once with its fp16, L2-normalized
embedding (the tower's width: 512, 768, ...), plus every image's caption list, so the map-style `COCOClipDataset`
and rebuilds reuse it. A rebuild encodes only texts the cache lacks, and loads no model at all when nothing is
missing.

Beside the `.pt` lie what a build reads instead of it, none of it pickled (`rows.py`): the rows and, for each
listing it served, that listing's order of them, memory-mapped by a warm rebuild of the same listing, so its
driver holds no caption text and no embedding. Any other listing reads the `.pt` once and writes its own order. A
build holds `<cache>.lock` while it runs (`sharding.outdir.locked_cache`), so two builds never rewrite one cache
under each other.

Encoding survives interrupts: the missing texts are sorted by token length and cut into chunks of
`ENCODE_CHUNK` captions; each finished chunk is written at once (`.npy`, atomically) to a folder next to the cache
(`<cache>.parts/<key>/`), keyed by everything that decides its bits (encoder, device, batch size, chunk size, the
texts in order). A rerun loads the finished chunks and encodes the rest. Chunks are encoded the same way whether
the run was interrupted or not, so the result is bitwise the same; `_save_cache` removes the folder once the cache
holds them. On a cluster whose nodes see the cache's folder the encoding tasks write their chunks there
themselves (`encode_chunk`). A cold encoding keeps its token ids packed (int32 + offsets) and writes each chunk's
rows into `<cache>.rows.partial.npy` as it finishes, which becomes the rows file once the `.pt` is written.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..sources.listing import Listing
from . import rows as plain
from .rows import CaptionEmbeddings, ListingFiles, listing_files, rows_path  # noqa: F401 - the cache's API
from ..errors import UserError
from ..format.atomic import save_torch_atomic
from ..format.captions import CACHE_VERSION, load_embeddings_cache
from ..format.names import EMBED_DIM

ENCODE_CHUNK = 4096  # captions per persisted chunk: ~40 s of CPU work on 2 cores with the full tower


def _whole(cached: dict) -> bool:
    """Whether a `.pt`'s parts fit together: its texts and truncated texts lists of strings, its embeddings one
    2-D row per text. One that does not is a damaged cache, encoded again, never indexed out of step."""
    texts, table, truncated = cached.get("texts"), cached.get("embeddings"), cached.get("truncated")
    return isinstance(texts, list) and isinstance(truncated, list) and isinstance(table, torch.Tensor) \
        and table.ndim == 2 and len(table) == len(texts) and all(isinstance(t, str) for t in (*texts, *truncated))


_FINGERPRINTS: dict[tuple, str] = {}  # (folder, each file's name, size, mtime) → fingerprint: hashed once a process


def encoder_fingerprint(name: str) -> str:
    """Identify an encoder: a hub id as it is; a local folder by the content of its config, tokenizer and weight
    files (sha256 of their bytes, not their sizes or the folder's path), so weights replaced in place invalidate
    the cache and the same tower copied elsewhere does not. Written `<base name>#<16 hex digits>`."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return name
    files = sorted(f for f in path.iterdir() if f.suffix in (".json", ".safetensors", ".bin", ".txt") and f.is_file())
    key = (str(path.resolve()), *((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}\0".encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
        _FINGERPRINTS[key] = f"{path.name}#{h.hexdigest()[:16]}"
    return _FINGERPRINTS[key]


def parts_dir(cache: Path) -> Path:
    """The folder holding the finished chunks of an interrupted encoding for `cache`."""
    return cache.with_name(cache.name + ".parts")


def _save_cache(path: Path, listing: Listing, *, text_encoder: str, fingerprint: str, random_init: bool,
                texts: list[str], table: np.ndarray, truncated: list[str]) -> None:
    """Write the `.pt` (the seed's format: unique texts, their embeddings in that order, every image's captions)
    and its rows file atomically, then drop the chunks of any interrupted encoding (the cache now holds them)."""
    first = listing.first_caption.tolist()
    one = {t: t for t in texts}  # each caption list names the very `texts` string: pickled once, referred to after
    data = {
        "version": CACHE_VERSION,
        "text_encoder": text_encoder,
        "fingerprint": fingerprint,
        "random_init": random_init,
        "texts": texts,
        "embeddings": torch.from_numpy(np.ascontiguousarray(table)),  # [U, D] in `texts` order
        "truncated": truncated,
        "image_ids": torch.from_numpy(listing.image_id.copy()),
        "captions": [[one[listing.captions[k]] for k in range(a, b)] for a, b in zip(first, first[1:])],
        "file_names": list(listing.file_name),
    }
    needed = data["embeddings"].numel() * data["embeddings"].element_size() + sum(map(len, texts))
    save_torch_atomic(data, path, needed_bytes=needed)  # a full disk: OSError(ENOSPC), no .tmp left
    if isinstance(table, np.memmap) and Path(table.filename).resolve() == plain.partial_rows(path).resolve():
        os.replace(plain.partial_rows(path), rows_path(path))
    else:
        plain.save_rows(rows_path(path), table)
    shutil.rmtree(parts_dir(path), ignore_errors=True)


def _chunk_key(fingerprint: str, texts: Iterable[str], *, device: str, batch_size: int, chunk: int) -> str:
    """What decides a chunk's bits: the encoder, where and how it runs, and the texts in encoding order."""
    h = hashlib.sha256(f"{fingerprint}\n{torch.device(device).type}\n{batch_size}\n{chunk}\n".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()[:20]


_WORKER_ENCODERS: dict[tuple[str, str], object] = {}  # in a Ray worker: the tower, loaded once per process


def encode_chunk(text_encoder: str, device: str, ids: list[list[int]], batch_size: int,
                 path: str | None = None) -> np.ndarray | None:
    """One chunk of token ids → `[len(ids), D]` float16, as a task of its own (a Ray task under `--executor ray`,
    on a GPU where the cluster has one); the tower stays loaded in the worker for its next chunk. With `path`
    (a folder every node shares with the driver) the task writes the chunk there itself and returns None: no
    embedding travels back to the driver."""
    from shardgen.text.encoder import TextEncoder

    key = (text_encoder, device)
    if key not in _WORKER_ENCODERS:
        _WORKER_ENCODERS[key] = TextEncoder(text_encoder, device=device)
    arr = _WORKER_ENCODERS[key].encode_ids(ids, batch_size=batch_size).to(torch.float16).numpy()
    if path is None:
        return arr
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    plain.save_rows(Path(path), arr)  # atomically: a chunk is whole or absent
    return None


TOKENIZE_SLICE = 1 << 16  # texts tokenized at once: their lists of ints live only that long


def _tokenize_packed(encoder, texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Every text's token ids as one int32 array and int64 offsets (~0.1 KB a text where lists of ints hold ~0.8),
    tokenized a slice at a time; with the indices of the texts cut to 77 tokens."""
    flats, lengths, cut = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)], []
    for s in range(0, len(texts), TOKENIZE_SLICE):
        ids, c = encoder.tokenize(texts[s:s + TOKENIZE_SLICE])
        cut += [s + i for i in c]
        lengths.append(np.fromiter(map(len, ids), np.int64, len(ids)))
        flats.append(np.fromiter(itertools.chain.from_iterable(ids), np.int32))
    return np.concatenate(flats), np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64), cut


# long: one loop that loads or encodes each chunk, with the progress bar that shows the resumed part
def encode_resumable(texts: list[str], *, text_encoder: str, fingerprint: str, cache: Path, device: str,
                     batch_size: int, chunk: int = ENCODE_CHUNK, progress: bool = False,
                     submit: Callable | None = None, tasks_write: bool = False, into: Path | None = None
                     ) -> tuple[np.ndarray, set[str], bool]:
    """Encode `texts` (unique) chunk by chunk, keeping finished chunks on disk; continue an interrupted run.
    With `submit` (`submit(fn, *args)` → a future, e.g. a Ray executor's, asking for a GPU where the cluster has
    one) the missing chunks are encoded as its tasks, all at once, on `device` there; with `tasks_write` too
    (every node sees the cache's folder) each task writes its chunk there itself. Returns (`[N, D]` float16 in
    `texts` order — a `.npy` memory-mapped at `into` when given, so the rows never all sit in memory —, the
    truncated texts, random_init)."""
    # long: one loop that loads, has encoded or encodes each chunk, with the bar that shows the resumed part
    from tqdm.auto import tqdm

    from shardgen.text.encoder import TextEncoder

    encoder = TextEncoder(text_encoder, device="cpu" if submit is not None else device)  # here: tokenize only
    flat, offsets, cut = _tokenize_packed(encoder, texts)
    order = np.argsort(offsets[:-1] - offsets[1:], kind="stable")  # longest first: chunks of similar length

    def ids_of(idx: np.ndarray) -> list[list[int]]:
        return [flat[offsets[i]:offsets[i + 1]].tolist() for i in idx.tolist()]

    folder = parts_dir(cache) / _chunk_key(fingerprint, (texts[i] for i in order.tolist()), device=device,
                                           batch_size=batch_size, chunk=chunk)
    starts = range(0, len(order), chunk)
    width = encoder.embed_dim  # the tower's projection: 512 for ViT-B, 768 for ViT-L/14, ...

    def chunk_file(s: int) -> Path:
        return folder / f"chunk-{s // chunk:06d}.npy"

    done = {s: a for s in starts  # finished chunks, memory-mapped: a resume holds no second copy
            if (a := plain.load_rows(chunk_file(s), (min(chunk, len(order) - s), width))) is not None}
    resumed = sum(len(a) for a in done.values())
    bar = tqdm(total=len(order), initial=resumed, desc="encode captions" + (f" (resumed {resumed})" if resumed else ""),
               unit="cap", disable=not progress)
    if submit is not None and tasks_write:
        folder.mkdir(parents=True, exist_ok=True)
    tasks = {} if submit is None else {
        s: submit(encode_chunk, text_encoder, device, ids_of(order[s:s + chunk]), batch_size,
                  str(chunk_file(s)) if tasks_write else None)
        for s in starts if s not in done}
    shape = (len(texts), width)
    out = np.empty(shape, np.float16) if into is None else plain.allocated_rows(into, shape)
    for s in starts:
        idx = order[s:s + chunk]
        arr = done.get(s)
        if arr is None:
            arr = tasks.pop(s).result() if s in tasks else \
                encoder.encode_ids(ids_of(idx), batch_size=batch_size).to(torch.float16).numpy()
            if arr is None:  # the task wrote it
                arr = plain.load_rows(chunk_file(s), (len(idx), width))
                if arr is None:
                    raise UserError(f"{chunk_file(s)}: a caption chunk a task wrote is not whole here; is the "
                                    "cache folder shared by every node?")
            else:
                folder.mkdir(parents=True, exist_ok=True)
                plain.save_rows(chunk_file(s), arr)
            bar.update(len(idx))
        out[idx] = arr  # [len(idx), D], one chunk at a time
    bar.close()
    if isinstance(out, np.memmap):
        out.flush()
    return out, {texts[i] for i in cut}, encoder.random_init


# long: the warm path, then the cache's texts, the missing ones encoded, and the files a warm rebuild reads
def encode_captions(listing: Listing, *, text_encoder: str, cache: Path, device: str = "cpu",
                    batch_size: int = 256, progress: bool = False, chunk: int = ENCODE_CHUNK,
                    submit: Callable | None = None, tasks_write: bool = False,
                    scratch: Path | None = None) -> tuple[CaptionEmbeddings, bool]:
    """Embeddings for every caption of `listing`, from the cache where possible (missing ones encoded, on
    `submit`'s tasks when given). Returns (embeddings, whether the `.pt` was written). The result is always the
    cache's files memory-mapped (see the module docstring): a warm rebuild of the same listing reads no caption.
    `scratch`: a folder of the build's own for the listing's order when the cache's folder is read-only."""
    fingerprint = encoder_fingerprint(text_encoder)
    folders = (cache.parent,) + ((scratch,) if scratch is not None and scratch != cache.parent else ())
    warm = plain.load_warm(cache, text_encoder, fingerprint, listing, folders)
    if warm is not None:
        return warm, False
    texts = list(dict.fromkeys(listing.captions))
    cached = load_embeddings_cache(cache, mmap=True)
    row: dict[str, int] = {}  # text → row of `table`
    table = None  # [rows, D]: the cache's (a memory-mapped tensor), then this listing's (an array)
    truncated: set[str] = set()
    random_init = False
    if cached is not None and cached.get("fingerprint") == fingerprint and _whole(cached):
        random_init = bool(cached["random_init"])
        row = {t: i for i, t in enumerate(cached["texts"])}
        table = cached["embeddings"]
        truncated = set(cached["truncated"])
    missing = [t for t in texts if t not in row]
    if missing or table is None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        if table is None:  # a cold cache: `missing` is `texts`, in order; the rows go straight to a file
            table, cut, random_init = (encode_resumable(
                missing, text_encoder=text_encoder, fingerprint=fingerprint, cache=cache, device=device,
                batch_size=batch_size, chunk=chunk, progress=progress, submit=submit, tasks_write=tasks_write,
                into=plain.partial_rows(cache)) if missing else (np.empty((0, EMBED_DIM), np.float16), set(), False))
        else:  # some texts new to a warm cache: its rows and theirs, in this listing's order
            new, cut, random_init = encode_resumable(missing, text_encoder=text_encoder, fingerprint=fingerprint,
                                                     cache=cache, device=device, batch_size=batch_size,
                                                     chunk=chunk, progress=progress, submit=submit,
                                                     tasks_write=tasks_write)
            row.update((t, len(table) + i) for i, t in enumerate(missing))
            table = np.concatenate([table.to(torch.float16).numpy(), new])[[row[t] for t in texts]]
        truncated |= cut
        row = {t: i for i, t in enumerate(texts)}
        _save_cache(cache, listing, text_encoder=text_encoder, fingerprint=fingerprint, random_init=random_init,
                    texts=texts, table=table, truncated=sorted(t for t in truncated if t in row))
    elif not plain.same_rows(rows_path(cache), table):  # a cache from before its rows file, or a `.pt` put there
        plain.save_rows(rows_path(cache), table.to(torch.float16).numpy())
    plain.save_order(cache, listing, row, truncated, shape=tuple(table.shape), fingerprint=fingerprint,
                random_init=random_init, folders=folders)
    warm = plain.load_warm(cache, text_encoder, fingerprint, listing, folders)
    if warm is None:
        raise RuntimeError(f"{cache}: the files just written for this listing do not read back")
    return warm, bool(missing) or not texts
