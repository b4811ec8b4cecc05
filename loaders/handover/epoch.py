"""One producer's share of an epoch, as a pipeline of the stages: plan → read spans → parse records → shuffle →
take a batch → draw its augmentation → collate + decode into reused memory → deliver. With `decode="gpu"` the
batch is delivered with its JPEG bytes and its `Augment` (`batch["augment"]`), which the device decoder applies.

A producer is the main process (`num_workers=0`), one of our worker processes (`loaders.handover.workers`) or a
worker of a caller's own DataLoader (`ShardStream`); the pipeline is the same, only its batch memory differs
(`slots`). Batch i of the epoch comes from producer i % W, as with DataLoader's round-robin, so batches do not
depend on W.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np

from shardgen.format import redact

from ..shape.augment import make_augmentation
from ..shape.batches import Decoder, collate
from ..config import LoaderConfig
from ..errors import LoaderError
from ..plan.ranks import (
    Layout,
    Pieces,
    Span,
    batches_per_rank,
    plan_remainder,
    plan_resampled,
    plan_worker,
    rank_samples,
    shuffle_rng,
    worker_batch_sizes,
)
from ..plan.mixing import mixed_pieces
from ..read.records import Record, RecordParser
from ..plan.seeds import generator
from ..plan.shuffle import Taker, iter_shuffled
from ..plan.sources import ShardSet
from ..read.spans import iter_span

log = logging.getLogger("loaders")
_MAX_REPLACEMENTS = 16  # under on_error="skip", give up filling a batch after this many extra bad samples


class SkipCounter:
    """on_error="skip": counts skipped samples and warns at most every `every_s` seconds."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s, self.last, self.count = every_s, 0.0, 0

    def __call__(self, error: Exception | str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            log.warning("%s (%d skipped so far in this worker)", error, self.count)


class EpochPipeline:
    """The epoch's batches for one producer. Holds only configuration: safe to send to worker processes."""

    def __init__(self, shards: ShardSet, cfg: LoaderConfig, *, rank: int, world_size: int, image_size: int,
                 backend: str) -> None:
        self.shards, self.cfg, self.rank, self.world_size = shards, cfg, rank, world_size
        self.image_size, self.backend = image_size, backend
        # a resumed epoch's stream positions not yet seen (loaders.plan.resume)
        self.remaining: np.ndarray | None = None
        # batch["source"]: records carry their shard's URL (as shown in messages)
        self.source_of = {redact(url): shards.source_of(i) for i, url in enumerate(shards.urls)}

    @property
    def layout(self) -> Layout:
        cfg = self.cfg
        return Layout(self.world_size, cfg.workers, cfg.batch_size, cfg.drop_last,
                      cfg.shuffle_buffer if cfg.shuffle else 0)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (identical on every rank)."""
        return batches_per_rank(self.shards.n_samples, world_size=self.world_size, batch_size=self.cfg.batch_size,
                                drop_last=self.cfg.drop_last)

    def pieces(self, epoch: int) -> Pieces | None:
        """A mixed epoch's stream (`loaders.plan.mixing`); None for one set's (its shards whole, `plan`)."""
        shards = self.shards
        if not shards.quotas:
            return None
        return mixed_pieces(tuple(shards.counts), shards.shard_source, shards.quotas, seed=self.cfg.seed,
                            epoch=epoch, shuffle=self.cfg.shuffle)

    def plan(self, worker: int, epoch: int, *, resumed: bool = False) -> tuple[list[Span], list[int]]:
        """The spans producer `worker` reads in `epoch` (`resumed`: in what is left of it, `self.remaining`), and
        the sizes of the batches it makes of them."""
        cfg = self.cfg
        if resumed and self.remaining is not None:
            return plan_remainder(self.shards.counts, self.remaining, self.layout, rank=self.rank, worker=worker,
                                  seed=cfg.seed, epoch=epoch, shuffle=cfg.shuffle, pieces=self.pieces(epoch))
        if not cfg.resampled:
            return plan_worker(self.shards.counts, rank=self.rank, world_size=self.world_size, worker=worker,
                               num_workers=cfg.workers, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch,
                               shuffle=cfg.shuffle, drop_last=cfg.drop_last, pieces=self.pieces(epoch))
        n_rank = rank_samples(self.shards.n_samples, world_size=self.world_size, drop_last=cfg.drop_last)
        sizes = worker_batch_sizes(n_rank, batch_size=cfg.batch_size, num_workers=cfg.workers, worker=worker,
                                   drop_last=cfg.drop_last)
        rng = generator("resample", cfg.seed, epoch, self.rank, worker)
        return plan_resampled(self.shards.counts, n_samples=sum(sizes), rng=rng), sizes

    def iter_records(self, spans: list[Span], quota: int, parser: RecordParser, skip) -> Iterator[list[Record]]:
        """`quota` parsed records of the spans, in lists. With `skip` (on_error="skip"), a bad sample or the
        unreadable rest of a shard is skipped and the spans are read again from the start to refill what was
        lost."""
        cfg, produced = self.cfg, 0
        while produced < quota:
            before = produced
            for span in spans:
                url = self.shards.urls[span.shard]
                shown = redact(url)  # records carry the URL for messages only
                try:
                    groups = iter_span(url, span, count=self.shards.counts[span.shard], retries=cfg.retries,
                                       backoff=cfg.retry_backoff, storage_options=cfg.storage_options)
                    for keys, fields in (_without_skipped(groups, span) if span.skip else groups):
                        records = parser.parse_group(shown, keys, fields, skip)[:quota - produced]
                        if records:
                            yield records
                            produced += len(records)
                        if produced >= quota:
                            return
                except LoaderError as exc:
                    if skip is None:
                        raise
                    skip(f"skipping rest of span: {exc}")
            if produced == before:
                raise LoaderError(f"no readable samples in {[redact(self.shards.urls[s.shard]) for s in spans]}")

    def iter_batches(self, worker: int, *, generation: int, epoch: int, skip_batches: int, memory,
                     resumed: bool = False) -> Iterator[dict]:
        """The batches producer `worker` (0 without workers) yields in `epoch` (`resumed`: in its rest, see
        `plan`), into `memory` (`slots`). Resuming after `skip_batches`, producer w plays the role of the one that
        produced batch skip + w, so the resumed sequence continues exactly; skipped batches are read but not
        decoded. The shuffle buffer and the augmentation draw from generators of their own: the buffer's order
        is then a function of the plan alone, which `loaders.plan.resume` replays; the augmentation is drawn for every
        batch, skipped ones too, whichever decoder applies it."""
        cfg, workers = self.cfg, self.cfg.workers
        worker = (worker + skip_batches) % workers
        spans, sizes = self.plan(worker, epoch, resumed=resumed)
        rng = generator("augment", cfg.seed, epoch, self.rank, worker)
        augmentation = make_augmentation(size=self.image_size, crop=cfg.crop, flip=cfg.flip, extra=cfg.augmentations)
        skip = SkipCounter() if cfg.on_error == "skip" else None
        parser = RecordParser(caption=cfg.caption, embed_dim=cfg.embed_dim, seed=cfg.seed, epoch=epoch)
        records = self.iter_records(spans, sum(sizes), parser, skip)
        raw = Taker(iter_shuffled(records, size=self.layout.shuffle_buffer,
                                  rng=shuffle_rng(cfg.seed, epoch, self.rank, worker)))
        threads = cfg.decode_threads or Decoder.default_threads(workers)
        decoder = Decoder(backend=self.backend, gil_switch_interval=cfg.gil_switch_interval,
                          threads=threads if cfg.decode == "cpu" else 1)
        stages = {"raw": raw, "decoder": decoder, "skip": skip, "memory": memory, "carried": parser.carried,
                  "draw": lambda: augmentation.draw(1, rng)}  # what `finish` needs to replace a sample
        pending = None
        n_skip = len(range(worker, skip_batches, workers))  # rank batch i comes from producer i % W
        try:
            for n, size in enumerate(sizes):
                records = raw.take(size)
                if 0 < len(records) < size:  # on_error="skip": replacements used samples this batch counted on
                    records += [records[k % len(records)] for k in range(size - len(records))]
                augment = augmentation.draw(size, rng)
                if n < n_skip:
                    continue
                batch = self.collate(records, parser.carried)
                if cfg.decode == "gpu":
                    batch["augment"] = augment
                    yield memory.deliver(batch)
                    continue
                pixels = memory.allocate(len(records), self.image_size, generation)
                job = (records, batch, pixels, decoder.start(records, pixels.pixels, augment))
                if decoder.pool is None:  # decoded already
                    yield self.finish(*job, **stages)
                    continue
                if pending is not None:  # batch n finishes decoding while batch n+1 was read and parsed
                    yield self.finish(*pending, **stages)
                pending = job
            if pending is not None:
                yield self.finish(*pending, **stages)
        finally:
            decoder.close()

    def collate(self, records: list[Record], carried: tuple) -> dict:
        cfg = self.cfg
        batch = collate(records, caption=cfg.caption, embed_dim=cfg.embed_dim, jpeg=cfg.decode == "gpu",
                        carried=carried)
        source_of = self.source_of
        batch["source"] = np.array([source_of[r.url] for r in records], dtype=np.int64)  # [B]
        return batch

    def finish(self, records: list[Record], batch: dict, pixels, futures: list, *, raw: Taker, decoder: Decoder,
               skip, draw, memory, carried: tuple) -> dict:
        """Wait for the batch's decoding; replace undecodable samples (on_error="skip") so batch sizes stay
        exact; hand the batch on."""
        errors = [e for f in futures for e in f.result()]
        for i, exc in errors:
            error = LoaderError(f"{records[i].url}: {records[i].key}: {exc}")
            if skip is None:
                raise error from exc
            skip(error)
            records[i], pixels.pixels[i] = self._replacement(records, i, raw, decoder, skip, draw)
        if errors:
            batch = self.collate(records, carried)
        return memory.deliver(pixels.attach(batch))

    def _replacement(self, records: list[Record], i: int, raw: Taker, decoder: Decoder, skip,
                     draw) -> tuple[Record, np.ndarray]:
        """The next sample that decodes, with its pixels (for a sample that failed to decode)."""
        for _ in range(len(records) + _MAX_REPLACEMENTS):
            rec = (raw.take(1) or records[(i + 1) % len(records):])[0]
            pixels = np.empty((1, self.image_size, self.image_size, 3), dtype=np.uint8)
            errors = decoder.start([rec], pixels, draw(), inline=True)[0].result()
            if not errors:
                return rec, pixels[0]
            skip(LoaderError(f"{rec.url}: {rec.key}: {errors[0][1]}"))
        raise LoaderError(f"no decodable samples left to fill a batch from {records[0].url}")


def _without_skipped(groups: Iterator[tuple[list[str], dict[str, list]]], span: Span
                     ) -> Iterator[tuple[list[str], dict[str, list]]]:
    """The groups of `span`'s samples without those in `span.skip` (seen before a resume), unparsed."""
    index = span.start
    for keys, fields in groups:
        kept = [j for j in range(len(keys)) if index + j not in span.skip]
        index += len(keys)
        if len(kept) == len(keys):
            yield keys, fields
        elif kept:
            yield [keys[j] for j in kept], {ext: [c[j] for j in kept] for ext, c in fields.items()}
