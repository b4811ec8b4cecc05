"""The packing stage: CocoImage records → preprocessed `Sample`s, in input order, on N processes.

`iter_samples` yields (input_index, Sample | BadImage) strictly in input order whatever the worker count, with a
bounded number of chunks in flight, so memory stays flat and the output is a pure function of the input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from .coco import CocoImage
from .config import BuildConfig
from .embeddings import CaptionEmbeddings
from .errors import BadImage
from .format import make_key
from .images import preprocess_image
from .writer import Sample


def _preprocess_chunk(records: list[CocoImage], cfg: BuildConfig) -> list:
    out = []
    for rec in records:
        try:
            out.append(preprocess_image(rec.path, size=cfg.image_size, crop=cfg.crop, quality=cfg.jpeg_quality,
                                        draft=cfg.draft))
        except BadImage as exc:
            out.append(exc)
    return out


def to_sample(rec: CocoImage, img, emb: CaptionEmbeddings) -> Sample:
    meta = {
        "image_id": rec.image_id, "file_name": rec.file_name, "captions": list(rec.captions),
        "width": img.width, "height": img.height, "orig_width": img.orig_width, "orig_height": img.orig_height,
    }
    return Sample(key=make_key(rec.image_id), jpg=img.jpeg, meta=meta, embeddings=emb.rows_for(rec.captions))


def iter_samples(records: list[CocoImage], emb: CaptionEmbeddings, *, cfg: BuildConfig, start: int = 0,
                 workers: int = 1, chunk: int = 32) -> Iterator[tuple[int, CocoImage, Sample | BadImage, tuple]]:
    """Yield (index, record, Sample or BadImage, conversions) for records[start:], in order."""
    chunks = [(i, records[i:i + chunk]) for i in range(start, len(records), chunk)]

    def emit(first: int, recs: list[CocoImage], results: list):
        for j, (rec, res) in enumerate(zip(recs, results)):
            if isinstance(res, BadImage):
                yield first + j, rec, res, ()
            else:
                yield first + j, rec, to_sample(rec, res, emb), res.conversions

    if workers <= 1:
        for first, recs in chunks:
            yield from emit(first, recs, _preprocess_chunk(recs, cfg))
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: deque = deque()
        todo = iter(chunks)
        for first, recs in todo:  # keep ~4 chunks per worker in flight: bounded memory, busy workers
            pending.append((first, recs, pool.submit(_preprocess_chunk, recs, cfg)))
            if len(pending) >= 4 * workers:
                break
        while pending:
            first, recs, fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt[0], nxt[1], pool.submit(_preprocess_chunk, nxt[1], cfg)))
            yield from emit(first, recs, fut.result())
