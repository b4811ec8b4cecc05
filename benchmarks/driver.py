"""What the build's driver process itself costs per image (issue 28), at 20k and 100k+ images: its peak RSS, its
CPU time, and the bytes it reads and writes itself (`/proc/self/io`), beside the shard bytes the tasks wrote.

The input is a caption table of N rows over small JPEGs hard-linked N times (so the disk holds 40 distinct files),
one caption per image; the caption cache is made warm by a first build, so the measured build encodes nothing. Each
measured build runs in a child process that reports its own peak RSS during the build (`VmHWM`, reset after
importing torch: the libraries' own load peak, ~1.1 GB here, is no cost of the build), its CPU time
(`getrusage(RUSAGE_SELF)`: the driver alone, the shard tasks run in the local executor's processes) and
`/proc/self/io` (read before the task processes are reaped, whose I/O the kernel then adds to their parent's). Growth per image is the slope between the two
sizes, so the interpreter, torch and the executor's fixed costs cancel.

    python -m benchmarks.driver --work bench_out/driver [--sizes 20000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from .common import ensure_encoder, table, write_result

CHILD = """
import json, resource, sys, time
from contextlib import contextmanager
from pathlib import Path
import shardgen.sharding.pipeline as pipeline
from shardgen import BuildConfig, build_shards
table, root, out, enc, cache, workers = sys.argv[1:7]
seen = {}
opened = pipeline.open_executor

@contextmanager
def measured(*args, **kw):  # the driver's own I/O, read while the task processes live (once reaped, the kernel
    with opened(*args, **kw) as pool:  # adds theirs to this process's /proc/self/io)
        yield pool
        seen["io"] = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())

pipeline.open_executor = measured
import torch, transformers  # noqa: F401 - the imports' own peak (torch's libraries) is not the build's
Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak RSS (VmHWM) starts again from here
cfg = BuildConfig(coco_root=None, split=None, captions=Path(table), image_root=Path(root), out=Path(out),
                  text_encoder=enc, embeddings_cache=Path(cache), workers=int(workers), progress=False)
t0 = time.perf_counter()
manifest = build_shards(cfg).manifest
seconds = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
io = seen["io"]
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
peak = int(status["VmHWM"].split()[0]) * 1024
print(json.dumps({"n": manifest.n_samples, "shard_bytes": manifest.n_bytes, "seconds": seconds,
                  "peak_rss_bytes": peak, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "read_bytes": int(io["rchar"]), "written_bytes": int(io["wchar"])}))
"""
WARM = """
import sys
from pathlib import Path
from shardgen.sources.table import load_table
from shardgen.text.cache import encode_captions
table, root, enc, cache = sys.argv[1:5]
records = load_table(Path(table), Path(root), None).records
encode_captions(records, text_encoder=enc, cache=Path(cache), batch_size=512)
"""
DISTINCT_JPEGS = 40


def make_table(work: Path, n: int) -> tuple[Path, Path]:
    """`images/` with N hard links to 40 small JPEGs and a CSV table of N rows (one caption each)."""
    from PIL import Image
    import numpy as np

    root, table_path = work / f"images-{n}", work / f"table-{n}.csv"
    if table_path.is_file():
        return table_path, root
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sources = []
    for i in range(DISTINCT_JPEGS):
        path = work / f"src-{i}.jpg"
        if not path.is_file():
            ramp = np.linspace(0, 255, 128)[None, :, None] * rng.uniform(0.2, 1, (1, 1, 3))  # smooth: small JPEGs
            pixels = ramp + np.linspace(0, 60, 96)[:, None, None] + rng.normal(0, 4, (96, 128, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=85)
        sources.append(path)
    with open(table_path, "w") as fh:
        fh.write("image,caption\n")
        for i in range(n):
            name = f"img/{i:08d}.jpg"
            if not (root / name).exists():
                os.link(sources[i % DISTINCT_JPEGS], root / name)
            fh.write(f"{name},photo number {i} of a small test set\n")
    return table_path, root


def _child(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(work: Path, sizes: list[int], workers: int) -> dict:
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    encoder = ensure_encoder(work, "tiny")
    rows, measured = [], {}
    for n in sizes:
        table_path, root = make_table(work, n)
        cache = work / f"cache-{n}.pt"
        # warm the caption cache: every caption encoded once (no image touched), its order written for this table;
        # a no-op when it is warm already
        subprocess.run([sys.executable, "-c", WARM, str(table_path), str(root), str(encoder), str(cache)], check=True)
        out = work / f"out-{n}"
        subprocess.run(["rm", "-rf", str(out), str(work / f"warm-{n}")], check=True)
        got = _child(str(table_path), str(root), str(out), str(encoder), str(cache), str(workers))
        measured[n] = got
        rows.append({"images": n, "peak RSS MB": got["peak_rss_bytes"] / 1e6,
                     "CPU µs/img": got["cpu_s"] / n * 1e6, "driver writes / shard bytes": got["written_bytes"] /
                     got["shard_bytes"], "driver reads MB": got["read_bytes"] / 1e6, "img/s": n / got["seconds"]})
        print(f"{n} images: {json.dumps(got)}", flush=True)
    small, large = min(sizes), max(sizes)
    slope = {"rss_bytes_per_image": (measured[large]["peak_rss_bytes"] - measured[small]["peak_rss_bytes"])
             / (large - small),
             "cpu_us_per_image": (measured[large]["cpu_s"] - measured[small]["cpu_s"]) / (large - small) * 1e6}
    print(table(f"the build's driver process ({workers} workers, warm caption cache)", rows))
    print(f"growth from {small} to {large} images: {slope['rss_bytes_per_image']:.0f} bytes of peak RSS and "
          f"{slope['cpu_us_per_image']:.1f} µs of driver CPU per image")
    data = {"workers": workers, "sizes": measured, "rows": rows, "growth": slope,
            "goals": {"driver_writes_share": 0.05, "rss_bytes_per_image": 500, "cpu_us_per_image": 20}}
    write_result("driver", data)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("bench_out/driver"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    run(args.work, sorted(args.sizes), args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
