"""Caption encoding: our encoder (dedup + length-sorted dynamic padding) vs the seed's way (pad every caption to
77, batch 256, no dedup), same full-size random-init CLIP text tower, same captions from the sample."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from shardgen.sources.coco import load_split
from shardgen.format.coco_folders import find_split
from shardgen.text.encoder import CONTEXT_LENGTH, TextEncoder

from .common import ensure_encoder, ensure_sample, table, write_result


def naive_encode(encoder: TextEncoder, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            tok = encoder.tokenizer(texts[i:i + batch_size], padding="max_length", max_length=CONTEXT_LENGTH,
                                    truncation=True, return_tensors="pt")
            out.append(torch.nn.functional.normalize(encoder.model(**tok).text_embeds, dim=-1))
    return torch.cat(out)


def run(work: Path, *, images: int = 400) -> dict:
    root = ensure_sample(work, images)
    records, _ = load_split(find_split(root, "train"))
    texts = [c for r in records for c in r.captions]
    encoder = TextEncoder(str(ensure_encoder(work, "full")))
    torch.set_num_threads(torch.get_num_threads())

    t0 = time.perf_counter()
    ref = naive_encode(encoder, texts)
    naive_s = time.perf_counter() - t0

    unique = list(dict.fromkeys(texts))
    ids, _ = encoder.tokenize(texts)
    t0 = time.perf_counter()
    sorted_only = encoder.encode_ids(ids)  # dynamic padding + length sort, no dedup
    sorted_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ours = encoder.encode(texts)  # + dedup
    ours_s = time.perf_counter() - t0

    rows = [
        {"method": "seed: pad to 77, batch 256", "captions/s": len(texts) / naive_s, "ratio": 1.0,
         "max_abs_diff": 0.0},
        {"method": "length-sorted dynamic padding", "captions/s": len(texts) / sorted_s,
         "ratio": naive_s / sorted_s, "max_abs_diff": (sorted_only - ref).abs().max().item()},
        {"method": "ours: + dedup (shardgen)", "captions/s": len(texts) / ours_s, "ratio": naive_s / ours_s,
         "max_abs_diff": (ours - ref).abs().max().item()},
    ]
    print(table(f"caption encoding: {len(texts)} captions ({len(unique)} unique), full-size CLIP text tower, "
                f"fp32 CPU, {torch.get_num_threads()} threads", rows))
    write_result("encode", {"n_captions": len(texts), "n_unique": len(unique), "rows": rows})
    return {"rows": rows}
