"""`shardgen build --executor ray` against `--executor local` on the same machine in one run: img/s of each (the
goal: Ray ≥ 0.8× local), Ray's start-up reported apart, what one shard's task costs, and what Ray adds per task.

Each build runs in a fresh child process with the same settings (all cores, 1000 images per shard, caption
embeddings from a warm cache, so both measure images). The Ray child starts its local Ray first and times that
alone (`ray_startup_s`), then builds on it. `task_overhead_ms` is the round trip of an empty Ray task (submit +
get, 200 of them on the warm session): what Ray adds to each shard's task. Both builds must give the same shard
bytes; the run says so or fails.

    python -m benchmarks.ray_build --images 20000          # the measurement docs/benchmarks.md reports
    python -m benchmarks.ray_build --images 500 --per-shard 100   # a quick check of the script itself
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import ensure_encoder, ensure_sample, table, write_result


def _noop() -> None:
    return None


def _child(executor: str, root: str, out: str, encoder: str, cache: str, per_shard: int, workers: int) -> None:
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    startup = overhead_ms = 0.0
    if executor == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        noop = ray.remote(num_cpus=1)(_noop)
        ray.get(noop.remote())  # a worker process is up: what a build's first task would otherwise wait for
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        ray.get([noop.remote() for _ in range(200)])
        overhead_ms = (time.perf_counter() - t1) / 200 * 1000 * workers  # per task, as the CPUs see it
    cfg = BuildConfig(coco_root=Path(root), split="train", out=Path(out), text_encoder=encoder, workers=workers,
                      samples_per_shard=per_shard, embeddings_cache=Path(cache), executor=executor, progress=False)
    t0 = time.perf_counter()
    manifest = build_shards(cfg).manifest
    seconds = time.perf_counter() - t0
    print(json.dumps({"n": manifest.n_samples, "shards": len(manifest.shards), "seconds": seconds,
                      "ray_startup_s": startup, "task_overhead_ms": overhead_ms,
                      "sha256": hashlib.sha256("".join(s.sha256 for s in manifest.shards).encode()).hexdigest()}))


def _measure(executor: str, root: Path, out: Path, encoder: Path, cache: Path, per_shard: int, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ray_build", "--child", executor, str(root), str(out),
                           str(encoder), str(cache), str(per_shard), str(workers)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _warm_cache(root: Path, encoder: Path, cache: Path) -> None:
    from shardgen.format.coco_folders import find_split
    from shardgen.sources.coco import load_split
    from shardgen.sources.listing import Listing
    from shardgen.text.cache import encode_captions

    if not cache.is_file():
        records, _ = load_split(find_split(root, "train"))
        encode_captions(Listing.from_records(records), text_encoder=str(encoder), cache=cache)


def run(work: Path, *, images: int, per_shard: int) -> dict:
    root = ensure_sample(work, images)
    encoder = ensure_encoder(work, "tiny")
    cache = work / f"ray-build-cache-{images}.pt"
    _warm_cache(root, encoder, cache)
    workers = os.cpu_count() or 1
    local = _measure("local", root, work / "ray-bench-local", encoder, cache, per_shard, workers)
    on_ray = _measure("ray", root, work / "ray-bench-ray", encoder, cache, per_shard, workers)
    if on_ray["sha256"] != local["sha256"]:
        raise SystemExit("ray_build: the ray build's shards differ from the local build's")
    rows = [{"executor": name, "images": r["n"], "shards": r["shards"], "img/s": r["n"] / r["seconds"],
             "ratio": (r["n"] / r["seconds"]) / (local["n"] / local["seconds"]),
             "s/shard": r["seconds"] / r["shards"], "ray_startup_s": r["ray_startup_s"]}
            for name, r in (("local", local), ("ray", on_ray))]
    extra = {"task_overhead_ms": on_ray["task_overhead_ms"], "identical_bytes": True, "workers": workers,
             "samples_per_shard": per_shard}
    print(table(f"build on {workers} cores, {images} images, {per_shard} per shard (caption embeddings warm): "
                "--executor ray vs local (start-up apart)", rows))
    print(f"ray task round trip: {extra['task_overhead_ms']:.2f} ms of CPU per task; shards identical")
    write_result(f"ray_build-{images}", {"rows": rows, **extra})
    return {"rows": rows, **extra}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(argv[1], argv[2], argv[3], argv[4], argv[5], int(argv[6]), int(argv[7]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--work", type=Path, default=Path(".bench"))
    a = p.parse_args(argv)
    run(a.work, images=a.images, per_shard=a.per_shard)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
