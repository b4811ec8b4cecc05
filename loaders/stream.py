"""The streaming loader: shards (local, HTTP, S3, ...) → uint8 image batches + text embeddings, exact epochs.

Each worker process (or the main process) reads its planned spans of shards (`plan.py`), parses each sample as
it is read (id, chosen caption, a view of its embedding row, the JPEG bytes), keeps those in a shuffle buffer, and
assembles whole batches itself: JPEGs are decoded straight into one reused `[B, S, S, 3]` uint8 array (a
shared-memory slot in a worker process, see `loaders.workers`; by a thread pool in the main process), returned as an
`[B, 3, S, S]` view (channels-last strides: no CPU copy, and the layout GPU convolutions prefer). Normalization to
float is the device's job (`loaders.gpu`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from shardgen.format import EMBED_DIM, TarFormatError, decode_npy, is_remote, iter_sample_groups, npy_layout, open_url

from .decode import DecodeError, available_backends, decode_into
from .plan import Span, batches_per_rank, plan_resampled, plan_worker, rank_samples, worker_batch_sizes
from .sources import ShardSet, resolve_source
from .workers import SlotRing, WorkerPool, freeze_inherited_objects

log = logging.getLogger("loaders")
_json_scan = json.JSONDecoder().scan_once  # the C scanner without `json.loads`' wrappers (~1.5 µs a sample)


def _json_object(data) -> dict:
    text = str(data, "utf-8")
    try:
        obj, end = _json_scan(text, 0)
    except StopIteration:
        raise ValueError("json member is not JSON") from None
    if end != len(text) and text[end:].strip() or not isinstance(obj, dict):
        raise ValueError("json member is not one JSON object")
    return obj


CAPTION_MODES = ("random", "first", "all")


class LoaderError(RuntimeError):
    """A shard or sample could not be read; the message names the shard URL and sample key."""


_MAX_REPLACEMENTS = 16  # under on_error="skip", give up filling a batch after this many extra bad samples


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int
    num_workers: int = 0
    decode_threads: int | None = None  # default: cores / max(1, num_workers)
    shuffle: bool = True
    seed: int = 0
    caption: str = "random"
    image_size: int | None = None  # default: the manifest's image size
    crop: str = "center"  # or "random" (training augmentation, on uint8)
    flip: bool = False  # random horizontal flip (training augmentation)
    shuffle_buffer: int = 1000
    drop_last: bool = False
    resampled: bool = False
    rank: int | None = None
    world_size: int | None = None
    on_error: str = "raise"
    decode: str = "cpu"  # "gpu": ship raw JPEG bytes, decode on the device (see loaders.gpu)
    backend: str = "auto"
    pin_memory: bool | None = None
    prefetch_factor: int = 2
    persistent_workers: bool = True  # keep worker processes between epochs
    gil_switch_interval: float | None = 2e-4  # while iterating with decode threads; None = leave Python's default
    embed_dim: int = EMBED_DIM
    retries: int = 3  # remote shards: reopen and continue after transient errors
    retry_backoff: float = 0.5
    storage_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.caption not in CAPTION_MODES:
            raise ValueError(f"caption must be one of {CAPTION_MODES}, got {self.caption!r}")
        if self.crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {self.crop!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.decode not in ("cpu", "gpu"):
            raise ValueError(f"decode must be 'cpu' or 'gpu', got {self.decode!r}")
        if self.backend not in ("auto", *available_backends()):
            raise ValueError(f"backend must be 'auto' or one of {available_backends()}, got {self.backend!r}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")


def _rank_world(cfg: LoaderConfig) -> tuple[int, int]:
    if cfg.rank is not None or cfg.world_size is not None:
        rank, world = cfg.rank or 0, cfg.world_size or 1
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = 0, 1
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, world_size={world})")
    return rank, world


class _RateLimitedWarning:
    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s, self.last, self.count = every_s, 0.0, 0

    def __call__(self, msg: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            log.warning("%s (%d skipped so far in this worker)", msg, self.count)


class _BufferPool:
    """Reuses batch arrays nobody holds any more: a fresh 9.6 MB array costs ~2.3 ms of page faults per batch of
    64 here (~36 µs per image). An array is reused only when no tensor or view of it is alive anywhere (its
    refcount is back to the pool's own), so batches a caller keeps are never overwritten."""

    def __init__(self, size: int = 6) -> None:
        self.size, self.arrays = size, []

    def __getstate__(self) -> dict:  # DataLoader workers (spawn) get an empty pool, not megabytes of pixels
        return {"size": self.size, "arrays": []}

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        for a in self.arrays:
            if a.shape == shape and sys.getrefcount(a) == 3:  # the list, `a`, and getrefcount's argument
                return a
        a = np.empty(shape, dtype=np.uint8)
        self.arrays = (self.arrays + [a])[-self.size:]
        return a


class ShardStream(IterableDataset):
    """IterableDataset yielding whole batches (use with `DataLoader(batch_size=None)`; `make_loader` does)."""

    def __init__(self, shards: ShardSet, cfg: LoaderConfig, *, rank: int, world_size: int) -> None:
        super().__init__()
        self.shards, self.cfg, self.rank, self.world_size = shards, cfg, rank, world_size
        # (iteration generation, epoch, skip_batches) in shared memory: DataLoader workers of a caller's own read the
        # epoch set in the main process at the start of each iteration
        self._control = torch.zeros(3, dtype=torch.int64).share_memory_()
        self._epoch = 0  # the epoch being iterated (this process's copy, read once per iteration)
        self._salt = 0  # crc32 of f"{seed}:{epoch}:", set per iteration (random caption choice)
        self._buffers = _BufferPool()
        self._ring: SlotRing | None = None  # set by ShardLoader for its worker processes
        self._in_worker: int | None = None  # in a worker process: its index
        pre = shards.manifest.preprocess if shards.manifest else {}
        self.image_size = cfg.image_size or int(pre.get("image_size", 224))
        self.backend = available_backends()[0] if cfg.backend == "auto" else cfg.backend
        self.n_workers = max(1, cfg.num_workers)
        if len(shards.urls) < world_size * self.n_workers and not cfg.resampled:
            raise ValueError(
                f"{len(shards.urls)} shards for {world_size} ranks × {self.n_workers} workers: every worker "
                f"needs a shard of its own. Rebuild with a smaller --samples-per-shard (e.g. "
                f"{max(1, shards.n_samples // (world_size * self.n_workers))}) or use fewer workers")

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch; `skip_batches` resumes mid-epoch (skipped batches are read but not decoded)."""
        self._control[1], self._control[2] = int(epoch), int(skip_batches)
        self._epoch = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._control[1])

    @property
    def skip_batches(self) -> int:
        return int(self._control[2])

    def __len__(self) -> int:
        """Batches this rank yields per epoch (identical on every rank)."""
        return batches_per_rank(self.shards.n_samples, world_size=self.world_size, batch_size=self.cfg.batch_size,
                                drop_last=self.cfg.drop_last)

    @property
    def samples_per_epoch(self) -> int:
        """Samples this rank yields per epoch."""
        n = rank_samples(self.shards.n_samples, world_size=self.world_size, drop_last=self.cfg.drop_last)
        return (n // self.cfg.batch_size) * self.cfg.batch_size if self.cfg.drop_last else n

    # -- planning ---------------------------------------------------------------------------------------------
    def plan(self, worker: int) -> tuple[list[Span], list[int]]:
        cfg = self.cfg
        if not cfg.resampled:
            return plan_worker(self.shards.counts, rank=self.rank, world_size=self.world_size, worker=worker,
                               num_workers=self.n_workers, batch_size=cfg.batch_size, seed=cfg.seed,
                               epoch=self._epoch, shuffle=cfg.shuffle, drop_last=cfg.drop_last)
        n_rank = rank_samples(self.shards.n_samples, world_size=self.world_size, drop_last=cfg.drop_last)
        sizes = worker_batch_sizes(n_rank, batch_size=cfg.batch_size, num_workers=self.n_workers, worker=worker,
                                   drop_last=cfg.drop_last)
        rng = np.random.default_rng([cfg.seed, self._epoch, self.rank, worker, 0xA11])
        return plan_resampled(self.shards.counts, n_samples=sum(sizes), rng=rng), sizes

    # -- reading ----------------------------------------------------------------------------------------------
    # Samples travel in lists (one per read window, ~200 samples of 224 px) rather than one at a time: each
    # generator step costs ~0.2 µs a layer per item, and the tar reader hands out whole windows anyway.
    def _iter_span(self, span: Span) -> Iterator[tuple[str, list[str], dict[str, list]]]:
        """Samples [start, stop) of one shard, as (url, keys, {ext: contents}) groups. Remote reads are retried
        with backoff, resuming after the last sample yielded; local read errors and corrupt tars fail at once."""
        url = self.shards.urls[span.shard]
        remote = is_remote(url)
        done = 0
        for attempt in range(self.cfg.retries + 1):
            key = None
            try:
                with open_url(url, **self.cfg.storage_options) as fh:
                    i = 0  # index in the shard of the group's first sample
                    for keys, fields in iter_sample_groups(fh, zero_copy=True):
                        lo, hi = max(span.start + done - i, 0), min(span.stop - i, len(keys))
                        i += len(keys)
                        key = keys[-1]
                        if lo >= hi:
                            if i >= span.stop:
                                break
                            continue
                        if lo or hi < len(keys):
                            keys, fields = keys[lo:hi], {e: c[lo:hi] for e, c in fields.items()}
                        yield url, keys, fields
                        done += len(keys)
                        if i >= span.stop:
                            break
                return
            except Exception as exc:  # noqa: BLE001 - fsspec/aiohttp/botocore raise many types mid-stream
                retry = remote and attempt < self.cfg.retries
                if not retry:
                    what = "corrupt or truncated shard" if isinstance(exc, TarFormatError) else "read failed"
                    raise LoaderError(f"{url}: {key or '<start>'}: {what} ({exc})") from exc
                log.warning("%s: %s; retrying (%d/%d)", url, exc, attempt + 1, self.cfg.retries)
                time.sleep(self.cfg.retry_backoff * 2 ** attempt)

    def _record(self, url: str, key: str, jpg, meta_json, npy) -> tuple:
        """One sample as (url, key, image_id, caption(s), embedding row(s), jpeg bytes). Raises LoaderError.

        Parsed as soon as it is read: the caption is chosen from (seed, epoch, key) alone, so only the chosen
        embedding row travels through the shuffle buffer, as (dtype, a view of its bytes in the npy member): no
        copy, and a batch's rows become one array with a single join."""
        cfg = self.cfg
        try:
            if jpg is None or meta_json is None or npy is None:
                missing = [e for e, v in (("jpg", jpg), ("json", meta_json), ("npy", npy)) if v is None]
                raise KeyError(f"no {'/'.join(missing)} member")
            meta = _json_object(meta_json)
            captions = meta["captions"]
            dtype, shape, fortran, offset = npy_layout(npy)
            n = len(captions)
            if shape != (n, cfg.embed_dim):
                raise ValueError(f"embeddings {shape} do not match {n} captions of dim {cfg.embed_dim}")
            image_id = int(meta["image_id"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise LoaderError(f"{url}: {key}: bad sample ({exc!r})") from exc
        if fortran:  # never written by shardgen; allowed by the format
            rows = np.ascontiguousarray(decode_npy(npy))
            dtype, offset, npy = rows.dtype, 0, rows
        if cfg.caption == "all":
            return url, key, image_id, captions, np.frombuffer(npy, dtype, n * cfg.embed_dim, offset), jpg
        # crc32(f"{seed}:{epoch}:{key}") continued from the salt's crc
        j = 0 if cfg.caption == "first" or n == 1 else zlib.crc32(key.encode(), self._salt) % n
        size = cfg.embed_dim * dtype.itemsize
        if fortran:
            npy = npy.tobytes()
        return url, key, image_id, captions[j], (dtype, memoryview(npy)[offset + j * size:offset + (j + 1) * size]), jpg

    def _records(self, url: str, keys: list[str], fields: dict[str, list], warn) -> list[tuple]:
        """The group's samples parsed (`_record`); under on_error="skip" bad ones are left out, with a warning."""
        none = [None] * len(keys)
        samples = list(zip(keys, fields.get("jpg", none), fields.get("json", none), fields.get("npy", none)))
        record = self._record
        try:
            return [record(url, *sample) for sample in samples]
        except LoaderError:
            if self.cfg.on_error != "skip":
                raise
        out = []
        for sample in samples:
            try:
                out.append(record(url, *sample))
            except LoaderError as exc:
                warn(str(exc))
        return out

    def _iter_records(self, spans: list[Span], quota: int, warn) -> Iterator[list[tuple]]:
        """`quota` parsed samples of the spans, in lists. Under on_error='skip' a bad sample or the unreadable
        rest of a shard is skipped (with a warning) and the spans are read again from the start to refill what
        was lost."""
        produced = 0
        skip = self.cfg.on_error == "skip"
        while produced < quota:
            before = produced
            for span in spans:
                try:
                    for url, keys, fields in self._iter_span(span):
                        records = self._records(url, keys, fields, warn)[:quota - produced]
                        if records:
                            yield records
                            produced += len(records)
                        if produced >= quota:
                            return
                except LoaderError as exc:
                    if not skip:
                        raise
                    warn(f"skipping rest of span: {exc}")
            if produced == before:
                raise LoaderError(f"no readable samples in {[self.shards.urls[s.shard] for s in spans]}")

    def _iter_shuffled(self, chunks: Iterator[list], rng: np.random.Generator) -> Iterator[list]:
        """A shuffle buffer of `shuffle_buffer` samples that starts yielding at a tenth of that and fills up while
        reading two samples per sample yielded (webdataset's `initial` rule: the first batch does not wait for a
        full buffer). Takes and gives lists of samples."""
        size = self.cfg.shuffle_buffer if self.cfg.shuffle else 0
        if size <= 1:
            yield from chunks
            return
        initial = max(1, size // 10)
        buf: list = []
        draws: list[float] = []
        hold = False
        for chunk in chunks:
            out = []
            for item in chunk:
                buf.append(item)
                if len(buf) < size:
                    hold = not hold
                    if hold:  # filling: one yielded per two read
                        continue
                if len(buf) >= initial:
                    if not draws:
                        draws = rng.random(256).tolist()
                    j = int(draws.pop() * len(buf))
                    buf[j], buf[-1] = buf[-1], buf[j]
                    out.append(buf.pop())
            if out:
                yield out
        order = rng.permutation(len(buf)).tolist()
        yield [buf[j] for j in order]

    # -- batching ---------------------------------------------------------------------------------------------
    def _batch_array(self, n: int, generation: int) -> tuple[np.ndarray, object]:
        """Where a batch of n images is decoded: ([n, S, S, 3] array, what `_finish` hands on for it)."""
        s = self.image_size
        worker = self._in_worker
        if worker is None:
            return self._buffers.get((n, s, s, 3)), None
        # In a worker process, decode straight into shared memory: a reused slot, else a fresh shared tensor.
        # Either way the batch crosses to the main process without a 9.6 MB copy per batch of 64.
        slot = self._ring.acquire(worker, generation) if self._ring is not None else None
        if slot is not None:
            return slot[1][:n], (worker, slot[0], n, slot[2][:n])
        shared = torch.empty((n, s, s, 3), dtype=torch.uint8).share_memory_()
        return shared.numpy(), shared

    def _start_decode(self, records: list, out: np.ndarray, pool: ThreadPoolExecutor | None,
                      rng: np.random.Generator) -> list:
        """Start decoding the records into `out` ([n, S, S, 3]); returns futures of per-chunk error lists."""
        origins, flips = self._draw_augment(len(records), rng)
        jpegs = [r[5] for r in records]
        backend = self.backend
        flips = flips.tolist()
        origins = origins.tolist() if self.cfg.crop == "random" else None

        def work(lo: int, hi: int) -> list:
            errors = []
            for i in range(lo, hi):
                try:
                    if origins is None:
                        decode_into(jpegs[i], out[i], backend=backend, flip=flips[i])
                    else:
                        decode_into(jpegs[i], out[i], backend=backend, crop_origin=origins[i], flip=flips[i])
                except DecodeError as exc:
                    errors.append((i, exc))
            return errors

        if pool is None:
            return [_Done(work(0, len(records)))]
        n = pool._max_workers
        bounds = [round(k * len(records) / n) for k in range(n + 1)]
        return [pool.submit(work, bounds[k], bounds[k + 1]) for k in range(n) if bounds[k] < bounds[k + 1]]

    def _draw_augment(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Crop origins and flips for n images (drawn even for skipped batches, so resumes replay exactly)."""
        origins = rng.random((n, 2)) if self.cfg.crop == "random" else np.full((n, 2), 0.5)
        flips = rng.random(n) < 0.5 if self.cfg.flip else np.zeros(n, dtype=bool)
        return origins, flips

    def _batch(self, records: list) -> dict:
        """Everything but the pixels: ids, keys, chosen caption(s) and their embeddings."""
        _, keys, ids, captions, rows, _ = zip(*records)
        batch = {"image_id": np.array(ids, dtype=np.int64), "key": list(keys)}
        if self.cfg.decode == "gpu":
            batch["jpeg"] = [bytes(r[5]) for r in records]  # tensors in `_to_torch` (not a shm segment each)
        if self.cfg.caption == "all":
            dim = self.cfg.embed_dim
            n_max = max(len(c) for c in captions)
            emb = np.zeros((len(records), n_max, dim), dtype=np.float32)
            mask = np.zeros((len(records), n_max), dtype=bool)
            for i, r in enumerate(rows):
                k = len(r) // dim
                emb[i, :k] = r.reshape(k, dim)
                mask[i, :k] = True
            batch["text_embeddings"] = emb  # [B, n_max, 512], zero rows where mask is False
            batch["caption_mask"] = mask  # [B, n_max]
            batch["captions"] = [list(c) for c in captions]
        else:
            dtype = rows[0][0]
            if all(r[0] == dtype for r in rows):
                emb = np.frombuffer(b"".join([r[1] for r in rows]), dtype).reshape(len(rows), -1)
            else:  # shards written with different dtypes
                emb = np.stack([np.frombuffer(r[1], r[0]) for r in rows])
            batch["text_embedding"] = emb.astype(np.float32, copy=False)  # [B, 512]
            batch["caption"] = list(captions)
        return batch

    def _replacement(self, records: list, i: int, raw: _Taker, warn, rng: np.random.Generator):
        """The next sample that decodes, with its pixels (for a sample that failed to decode)."""
        for _ in range(len(records) + _MAX_REPLACEMENTS):
            rec = (raw.take(1) or records[(i + 1) % len(records):])[0]
            pixels = np.empty((1, self.image_size, self.image_size, 3), dtype=np.uint8)
            errors = self._start_decode([rec], pixels, None, rng)[0].result()
            if not errors:
                return rec, pixels[0]
            warn(f"{rec[0]}: {rec[1]}: {errors[0][1]}")
        raise LoaderError(f"no decodable samples left to fill a batch from {records[0][0]}")

    def _finish(self, records: list, batch: dict, pixels: np.ndarray, handle, futures: list, raw: _Taker, warn,
                rng: np.random.Generator) -> dict:
        errors = [e for f in futures for e in f.result()]
        for i, exc in errors:  # replace undecodable samples (on_error="skip") so batch sizes stay exact
            if self.cfg.on_error == "raise":
                raise LoaderError(f"{records[i][0]}: {records[i][1]}: {exc}") from exc
            warn(f"{records[i][0]}: {records[i][1]}: {exc}")
            records[i], pixels[i] = self._replacement(records, i, raw, warn, rng)
        if errors:
            batch = self._batch(records)
        if isinstance(handle, tuple):  # a slot of the shared ring: the main process fills in `image`
            worker, k, n, embeddings = handle
            if "text_embedding" in batch:  # and the embeddings, which are 128 KB to pickle per batch of 64
                embeddings[...] = batch.pop("text_embedding")
            batch["_slot"] = (worker, k, n)
        elif handle is not None:  # a shared tensor (a worker without a free slot)
            batch["image"] = handle.permute(0, 3, 1, 2)
        else:
            batch["image"] = pixels
        return batch if self._in_worker is not None else _to_torch(batch, None)

    def __iter__(self) -> Iterator[dict]:
        """One epoch, in this process (`num_workers=0`) or in a DataLoader worker of the caller's own."""
        info = get_worker_info()
        if info is not None:
            freeze_inherited_objects()
            self._in_worker = info.id
        generation, epoch, skip_batches = self._control.tolist()
        return self.produce(info.id if info is not None else 0, generation, epoch, skip_batches)

    def produce(self, worker: int, generation: int, epoch: int, skip_batches: int = 0) -> Iterator[dict]:
        """The batches worker `worker` (0 without workers) yields in `epoch`: batch i of the epoch comes from
        worker i % W. In a worker process (`_in_worker` set) batches are numpy fields plus a shared-memory slot
        (`_to_torch` turns them into tensors in the main process); here, tensors.

        Resuming after `skip_batches`, worker w plays the role of the worker that produced batch skip + w, so the
        resumed sequence continues exactly."""
        self._epoch = epoch
        self._salt = zlib.crc32(f"{self.cfg.seed}:{epoch}:".encode())
        worker = (worker + skip_batches) % self.n_workers
        spans, sizes = self.plan(worker)
        rng = np.random.default_rng([self.cfg.seed, self._epoch, self.rank, worker])
        warn = _RateLimitedWarning()
        raw = _Taker(self._iter_shuffled(self._iter_records(spans, sum(sizes), warn), rng))
        threads = self.cfg.decode_threads or max(1, (os.cpu_count() or 1) // self.n_workers)
        pool = ThreadPoolExecutor(threads) if threads > 1 and self.cfg.decode == "cpu" else None
        switch = sys.getswitchinterval()
        if pool is not None and self.cfg.gil_switch_interval is not None:
            # Decode threads release the GIL inside libjpeg but need it back between images; at the default 5 ms
            # they queue behind this thread's parsing. Measured on 2 cores: 4.9k → 6.3k img/s at 0.2 ms.
            sys.setswitchinterval(min(switch, self.cfg.gil_switch_interval))
        pending = None
        skip = len(range(worker, skip_batches, self.n_workers))  # rank batch i comes from worker i % W
        try:
            for n, size in enumerate(sizes):
                records = raw.take(size)
                if 0 < len(records) < size:  # on_error="skip": replacements used samples this batch counted on
                    records += [records[k % len(records)] for k in range(size - len(records))]
                if n < skip:
                    self._draw_augment(size, rng)
                    continue
                batch = self._batch(records)
                if self.cfg.decode == "gpu":
                    yield batch if self._in_worker is not None else _to_torch(batch, None)
                    continue
                pixels, handle = self._batch_array(len(records), generation)
                job = (records, batch, pixels, handle, self._start_decode(records, pixels, pool, rng))
                if pool is None:  # decoded already
                    yield self._finish(*job, raw, warn, rng)
                    continue
                if pending is not None:  # batch n finishes decoding while batch n+1 was read and parsed
                    yield self._finish(*pending, raw, warn, rng)
                pending = job
            if pending is not None:
                yield self._finish(*pending, raw, warn, rng)
        finally:
            sys.setswitchinterval(switch)
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _to_torch(batch: dict, ring: SlotRing | None) -> dict:
    """A batch as the caller sees it: numpy fields as tensors, `image` as uint8 [B, 3, S, S] (channels-last
    strides: no CPU copy, and the layout GPU convolutions prefer); a ring slot becomes its shared pixels."""
    slot = batch.pop("_slot", None)
    if slot is not None:
        batch["image"], embeddings = ring.give(*slot)
        if "text_embedding" not in batch and "text_embeddings" not in batch:
            batch["text_embedding"] = embeddings
    if "jpeg" in batch:
        batch["jpeg"] = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in batch["jpeg"]]
    for k in ("image_id", "text_embedding", "text_embeddings", "caption_mask"):
        if isinstance(batch.get(k), np.ndarray):
            batch[k] = torch.from_numpy(batch[k])
    image = batch.get("image")
    if isinstance(image, np.ndarray):
        batch["image"] = torch.from_numpy(image).permute(0, 3, 1, 2)
    return batch


class _Taker:
    """Records n at a time from a stream of lists of records."""

    def __init__(self, chunks: Iterator[list]) -> None:
        self.chunks, self.buf, self.pos = chunks, [], 0

    def take(self, n: int) -> list:
        """The next n records (fewer at the end of the stream)."""
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        while len(out) < n:
            self.buf = next(self.chunks, None)
            if self.buf is None:
                self.buf, self.pos = [], 0
                break
            self.pos = n - len(out)
            out += self.buf[:self.pos]
        return out


class _Done:
    """A finished 'future' for the no-thread path."""

    def __init__(self, value) -> None:
        self.value = value

    def result(self):
        return self.value


class ShardLoader:
    """What `make_loader` returns: iterate for batches; `len()` batches per epoch; `set_epoch(e)` per epoch.

    Without `set_epoch`, each new iteration advances the epoch by itself (so reshuffling never silently stops).
    With `num_workers > 0`, batches come from worker processes (`loaders.workers`), started on the first
    iteration and kept (unless `persistent_workers=False`) until `close()` or until the loader is collected.
    """

    def __init__(self, dataset: ShardStream, dataloader: DataLoader | None, *, pin_memory: bool = False) -> None:
        self.dataset, self.dataloader, self.pin_memory = dataset, dataloader, pin_memory
        self._pool: WorkerPool | None = None
        self._no_ring = False
        self._explicit_epoch = False
        self._next_epoch = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Like `DistributedSampler.set_epoch`; `skip_batches` resumes mid-epoch exactly (see ShardStream)."""
        self._explicit_epoch = True
        self.dataset.set_epoch(epoch, skip_batches)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def samples_per_epoch(self) -> int:
        return self.dataset.samples_per_epoch

    def close(self) -> None:
        """Stop the worker processes (a later iteration starts new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __iter__(self) -> Iterator[dict]:
        if not self._explicit_epoch:
            self.dataset.set_epoch(self._next_epoch)
            self._next_epoch += 1
        if self.dataset.cfg.num_workers == 0:
            return iter(self.dataloader)
        return self._iter_workers()

    def _iter_workers(self) -> Iterator[dict]:
        ds, cfg = self.dataset, self.dataset.cfg
        if ds._ring is None and cfg.decode == "cpu" and not self._no_ring:
            # per worker: the batches it may run ahead, the one being decoded and the next, and the two the
            # caller may still hold (the current batch and, during `next`, the previous one)
            try:
                ds._ring = SlotRing(cfg.num_workers, cfg.prefetch_factor + 4,
                                    (cfg.batch_size, ds.image_size, ds.image_size, 3), cfg.embed_dim)
            except (RuntimeError, OSError) as exc:  # e.g. a container's small /dev/shm
                self._no_ring = True
                log.warning("no shared-memory batch slots (%s); workers send each batch in its own segment", exc)
        if self._pool is not None and not self._pool.healthy:  # a worker died (killed, out of memory): start anew
            self.close()
        if self._pool is None:
            self._pool = WorkerPool(ds, cfg.num_workers, prefetch=cfg.prefetch_factor, seed=cfg.seed,
                                    guess=cfg.persistent_workers)
        generation, epoch, skip_batches = ds._control.tolist()
        # a new generation: slots of abandoned iterations become free
        generation = self._pool.next_generation(generation, epoch, skip_batches)
        ds._control[0] = generation
        if ds._ring is not None:
            ds._ring.release_unused()  # and those of batches the caller dropped since the last one arrived
        batches = self._converted(ds._ring, self._pool.epoch(generation, epoch, skip_batches))
        try:
            # Pinning copies each batch (9.6 MB for 64 images): a thread does it while the caller trains.
            yield from _in_background(batches, depth=cfg.prefetch_factor) if self.pin_memory else batches
        finally:
            batches.close()
            if not cfg.persistent_workers:
                self.close()

    def _converted(self, ring: SlotRing | None, batches: Iterator[dict]) -> Iterator[dict]:
        try:
            for batch in batches:
                if ring is not None:
                    ring.release_unused()  # every batch, also those that came without a slot
                batch = _to_torch(batch, ring)
                yield _pinned(batch) if self.pin_memory else batch
        finally:
            batches.close()


def _pinned(batch: dict) -> dict:
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _in_background(items: Iterator, *, depth: int) -> Iterator:
    """Iterate `items` on a thread, up to `depth` ahead; its errors are raised here; closing stops the thread."""
    import queue
    import threading

    out: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        out.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            out.put((None, exc))

    thread = threading.Thread(target=run, name="shardloader-pin", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = out.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def make_loader(source, *, batch_size: int, num_workers: int = 0, shuffle: bool = True, seed: int = 0,
                caption: str = "random", **options) -> ShardLoader:
    """Stream shards as batches: see `LoaderConfig` for the options and the README for the batch keys."""
    cfg = LoaderConfig(batch_size=batch_size, num_workers=num_workers, shuffle=shuffle, seed=seed, caption=caption,
                       **options)
    shards = resolve_source(source, storage_options=cfg.storage_options, embed_dim=cfg.embed_dim)
    rank, world = _rank_world(cfg)
    dataset = ShardStream(shards, cfg, rank=rank, world_size=world)
    pin = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
    # Without workers, a DataLoader (batch_size=None) only pins; with workers, batches arrive from our worker
    # processes as numpy fields plus a shared-memory slot number, and the ShardLoader turns them into tensors
    # (and pins them) in the main process.
    dataloader = (DataLoader(dataset, batch_size=None, num_workers=0, pin_memory=pin, collate_fn=_as_is)
                  if num_workers == 0 else None)
    return ShardLoader(dataset, dataloader, pin_memory=pin and num_workers > 0)


def _as_is(batch: dict) -> dict:
    """Batches are already tensors: skip DataLoader's per-element `default_convert` walk."""
    return batch


__all__ = ["LoaderConfig", "LoaderError", "ShardLoader", "ShardStream", "make_loader"]
