"""Build throughput: `shardgen build` vs a naive loop (PIL full decode → resize → crop → encode → tar), same
machine, same run; per-image cost and peak RSS at 1k vs 4k images (both should be flat).

Each measurement runs in a fresh child process so peak RSS is its own. Caption embeddings come from a warm cache
(what a rebuild or resume sees) so the numbers are about images; `benchmarks.encode` measures the text side.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

from .common import ensure_encoder, ensure_sample, table, write_result


def naive_build(root: Path, out: Path, limit: int) -> int:
    """The notebook-style loop: full-size PIL decode, torchvision-like resize + crop, one process, one tar."""
    from PIL import Image

    from shardgen.sources.coco import load_split
    from shardgen.format.coco_folders import find_split

    records, _ = load_split(find_split(root, "train"))
    records = records[:limit]
    emb = np.zeros((5, 512), dtype=np.float16)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "naive.tar", "w") as tar:
        for r in records:
            img = Image.open(r.path).convert("RGB")
            w, h = img.size
            s = 224 / min(w, h)
            img = img.resize((round(w * s), round(h * s)), Image.BICUBIC)
            left, top = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
            img = img.crop((left, top, left + 224, top + 224))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            npy = io.BytesIO()
            np.save(npy, emb[: len(r.captions)])
            for ext, data in (("jpg", buf.getvalue()), ("json", json.dumps({"captions": r.captions}).encode()),
                              ("npy", npy.getvalue()), ("txt", r.captions[0].encode())):
                ti = tarfile.TarInfo(f"{r.image_id:012d}.{ext}")
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    return len(records)


def _vm_hwm_kb() -> int:
    """Peak RSS of this process image (VmHWM; unlike ru_maxrss it does not inherit the parent's before exec)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def _child(kind: str, root: str, out: str, limit: int, encoder: str, workers: int, cache: str) -> None:
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    t0 = time.perf_counter()
    if kind == "naive":
        n = naive_build(Path(root), Path(out), limit)
    else:  # caption embeddings come from a warm cache: text encoding is benchmarks.encode's subject
        cfg = BuildConfig(coco_root=Path(root), split="train", out=Path(out), text_encoder=encoder, limit=limit,
                          workers=workers, embeddings_cache=Path(cache), progress=False)
        n = build_shards(cfg).manifest.n_samples
    seconds = time.perf_counter() - t0
    peak_kb = max(_vm_hwm_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # main or a worker
    print(json.dumps({"n": n, "seconds": seconds, "peak_rss_mb": peak_kb / 1024}))


def _measure(kind: str, root: Path, out: Path, limit: int, encoder: Path, workers: int, cache: Path) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.build", kind, str(root), str(out), str(limit),
                           str(encoder), str(workers), str(cache)], capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**res, "img_per_s": res["n"] / res["seconds"], "ms_per_img": 1000 * res["seconds"] / res["n"]}


def run(work: Path, *, small: int = 1000, large: int = 4000) -> dict:
    root = ensure_sample(work, large)
    encoder = ensure_encoder(work, "tiny")
    import os

    from shardgen.sources.coco import load_split
    from shardgen.sources.listing import Listing
    from shardgen.text.cache import encode_captions
    from shardgen.format.coco_folders import find_split

    cores = os.cpu_count() or 1
    cache = work / f"build-cache-{large}.pt"
    if not cache.is_file():
        records, _ = load_split(find_split(root, "train"))
        encode_captions(Listing.from_records(records), text_encoder=str(encoder), cache=cache)
    naive = _measure("naive", root, work / "naive", small, encoder, 1, cache)
    ours1 = _measure("ours", root, work / "ours1", small, encoder, 1, cache)
    ours = _measure("ours", root, work / "ours", small, encoder, cores, cache)
    ours_large = _measure("ours", root, work / "ours-large", large, encoder, cores, cache)
    rows = [
        {"method": f"naive loop (PIL full decode), {small} img", "img/s": naive["img_per_s"], "ratio": 1.0,
         "ms/img": naive["ms_per_img"], "peak_rss_mb": naive["peak_rss_mb"]},
        {"method": f"shardgen build --workers 1, {small} img", "img/s": ours1["img_per_s"],
         "ratio": ours1["img_per_s"] / naive["img_per_s"], "ms/img": ours1["ms_per_img"],
         "peak_rss_mb": ours1["peak_rss_mb"]},
        {"method": f"shardgen build --workers {cores}, {small} img", "img/s": ours["img_per_s"],
         "ratio": ours["img_per_s"] / naive["img_per_s"], "ms/img": ours["ms_per_img"],
         "peak_rss_mb": ours["peak_rss_mb"]},
        {"method": f"shardgen build --workers {cores}, {large} img", "img/s": ours_large["img_per_s"],
         "ratio": ours_large["img_per_s"] / naive["img_per_s"], "ms/img": ours_large["ms_per_img"],
         "peak_rss_mb": ours_large["peak_rss_mb"]},
    ]
    flat = {"per_image_cost_4k_over_1k": ours_large["ms_per_img"] / ours["ms_per_img"],
            "peak_rss_4k_over_1k": ours_large["peak_rss_mb"] / ours["peak_rss_mb"]}
    print(table("build throughput (640×480 sample JPEGs → 224 px shards; caption embeddings from a warm cache)",
                rows))
    print(f"per-image cost 4k/1k: {flat['per_image_cost_4k_over_1k']:.2f}   "
          f"peak RSS 4k/1k: {flat['peak_rss_4k_over_1k']:.2f}")
    write_result("build", {"rows": rows, **flat})
    return {"rows": rows, **flat}


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[7])
