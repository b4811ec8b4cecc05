"""Does the loader's own worker pool and shared-memory slot ring earn its place (issue 31)? The same stages (plan,
read, parse, decode, collate: `ShardStream`, one batch per item) run two ways over the same shards, in one run:

- ours: `make_loader(..., num_workers=W)` — `ShardLoader`'s worker processes filling shared-memory batch slots;
- torch: `DataLoader(ShardStream(...), batch_size=None, num_workers=W, persistent_workers=True,
  pin_memory=<CUDA>)` — torch's worker processes, each batch pickled through its queue (pixels in shared memory,
  as a DataLoader worker's tensors are).

Rounds interleave the two, each keeps its best (this machine's speed drifts ±15 % over minutes), and each round
times EPOCHS consecutive epochs after an untimed first one (workers started, page cache warm).

    python -m benchmarks.pool --work bench_out/pool [--images 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from .common import ensure_encoder, ensure_sample, table, write_result

BATCH = 64
EPOCHS = 3


def _epochs(loader, set_epoch, first: int) -> tuple[int, float]:
    set_epoch(first)
    for _ in loader:  # untimed: starts workers, warms caches
        pass
    n, t0 = 0, time.perf_counter()
    for e in range(1, EPOCHS + 1):
        set_epoch(first + e)
        for batch in loader:
            n += len(batch["image"])
    return n, time.perf_counter() - t0


def run(work: Path, *, images: int, workers: int, rounds: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from loaders import make_loader
    from loaders.config import LoaderConfig
    from loaders.handover.loader import open_sources
    from loaders.handover.stream import ShardStream
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    work = work.resolve()
    shards = work / f"pool-shards-{images}"
    if not (shards / "manifest.json").is_file():
        build_shards(BuildConfig(coco_root=ensure_sample(work, images), split="train", out=shards, limit=images,
                                 samples_per_shard=250, text_encoder=str(ensure_encoder(work, "tiny")),
                                 progress=False))
    best: dict[str, float] = {}
    rates: dict[str, list[float]] = {"ours": [], "torch DataLoader": []}
    for r in range(rounds):
        ours = make_loader(str(shards), batch_size=BATCH, num_workers=workers, decode_threads=1, seed=0)
        n, s = _epochs(ours, ours.set_epoch, 100 * r)
        ours.close()
        rates["ours"].append(n / s)
        cfg = LoaderConfig(batch_size=BATCH, num_workers=workers, decode_threads=1, seed=0)
        sources = open_sources(str(shards), cfg)
        cfg = replace(cfg, embed_dim=sources.embed_dim)  # as make_loader does
        stream = ShardStream(sources, cfg, rank=0, world_size=1)
        theirs = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=True,
                            pin_memory=torch.cuda.is_available())
        n, s = _epochs(theirs, stream.set_epoch, 100 * r)
        del theirs
        rates["torch DataLoader"].append(n / s)
        print(f"round {r + 1}: ours {rates['ours'][-1]:.0f} img/s, torch DataLoader "
              f"{rates['torch DataLoader'][-1]:.0f} img/s", flush=True)
    best = {k: max(v) for k, v in rates.items()}
    rows = [{"loader": k, "img/s (best)": v, "vs torch": v / best["torch DataLoader"]} for k, v in best.items()]
    print(table(f"the same stages on two worker pools ({workers} workers, 1 decode thread each, batch {BATCH}, "
                f"{images} images, best of {rounds} interleaved rounds of {EPOCHS} epochs)", rows))
    data = {"images": images, "workers": workers, "rounds": rates, "rows": rows,
            "ours_vs_torch": best["ours"] / best["torch DataLoader"]}
    write_result("pool", data)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("bench_out/pool"))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    run(args.work, images=args.images, workers=args.workers, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
