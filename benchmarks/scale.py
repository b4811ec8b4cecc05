"""`make scale`: a dress rehearsal at COCO 2014's size (default 82,783 train + 40,504 val images, 5–7 captions each).

Generates a COCO-shaped set with `shardgen.sources.synthetic` (`coco_like`: COCO's image sizes, caption counts, unique
captions), then runs every stage in a fresh child process and records its time, its peak memory (the sum over the
process and all its children, RSS and PSS, sampled every 0.2 s) and what it left on disk:

  sample → encode (tiny text tower: dedup + cache at full caption count) → encode-full (full-size tower on a
  sample of captions: the per-caption cost) → build (warm cache: the image path) → verify → loader (one epoch,
  2 workers) → coco-dataset (`COCOClipDataset` on the raw folder + cache, 2 workers; per-worker private memory)
  → train (a few steps) → recall (Recall@K over the whole val split's captions).

Writes benchmarks/results/scale-<N>.json, prints a table, and projects the real COCO build from the measured
per-image and per-caption costs (`projection`). `--images` is the total; train:val keeps COCO's 82,783:40,504.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from .common import ensure_encoder, table, write_result

COCO_TRAIN, COCO_VAL = 82_783, 40_504
COCO_TRAIN_CAPTIONS, COCO_VAL_CAPTIONS = 414_113, 202_654
STAGES = ("sample", "encode", "encode-full", "build", "verify", "loader", "coco-dataset", "train", "recall")
GPU_CAPTIONS_PER_S = 20_000  # assumption, not measured here: ViT-B/32 text tower, fp16, one current datacenter GPU


def split_counts(images: int) -> tuple[int, int]:
    """(train, val) for a total, in COCO 2014's proportion."""
    n_train = max(1, round(images * COCO_TRAIN / (COCO_TRAIN + COCO_VAL)))
    return n_train, max(1, images - n_train)


# ---- memory of a process tree ------------------------------------------------------------------------------------

def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return pids


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS and private (USS) memory of one process from smaps_rollup, in MB (zeros once it is gone)."""
    fields = {"Rss:": "rss", "Pss:": "pss", "Private_Clean:": "uss", "Private_Dirty:": "uss"}
    out = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                key = line.split(maxsplit=1)[0]
                if key in fields:
                    out[fields[key]] += int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


class PeakMemory(threading.Thread):
    """Samples the summed RSS and PSS of a process and its descendants until `stop()`; keeps the peaks."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, {"rss": 0.0, "pss": 0.0}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            mems = [memory_mb(p) for p in _tree(self.pid)]
            for k in self.peak:
                self.peak[k] = max(self.peak[k], sum(m[k] for m in mems))
            self._done.wait(self.every)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return self.peak


def disk_mb(*paths: Path) -> float:
    return sum(f.stat().st_size for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*"))
               if f.is_file()) / 1e6


# ---- stages (each runs in its own child process) -----------------------------------------------------------------

class Paths:
    def __init__(self, work: Path, images: int) -> None:
        self.root = work / f"coco-{images}"
        self.shards = work / f"shards-{images}"
        self.caches = work / f"captions-{images}"
        self.runs = work / f"train-{images}"
        self.tiny, self.full = work / "clip-tiny", work / "clip-full"

    def cache(self, split: str) -> Path:
        return self.caches / f"{split}_text_embeddings.pt"


def stage_sample(p: Paths, a: argparse.Namespace) -> dict:
    from shardgen.sources.synthetic import make_sample

    n_train, n_val = split_counts(a.images)
    shutil.rmtree(p.root, ignore_errors=True)
    make_sample(p.root, images=n_train, val_images=n_val, workers=a.workers, coco_like=True, progress=a.progress)
    return {"items": n_train + n_val, "unit": "img", "disk_mb": disk_mb(p.root)}


def stage_encode(p: Paths, a: argparse.Namespace) -> dict:
    from shardgen.sources.coco import load_split
    from shardgen.format.coco_folders import find_split
    from shardgen.sources.listing import Listing
    from shardgen.text.cache import encode_captions

    shutil.rmtree(p.caches, ignore_errors=True)
    p.caches.mkdir(parents=True)
    n = 0
    for split in ("train", "val"):
        records, _ = load_split(find_split(p.root, split))
        encode_captions(Listing.from_records(records), text_encoder=str(p.tiny), cache=p.cache(split),
                        progress=a.progress)
        n += sum(len(r.captions) for r in records)
    return {"items": n, "unit": "cap", "disk_mb": disk_mb(p.caches), "note": "tiny tower: dedup, cache, I/O"}


def stage_encode_full(p: Paths, a: argparse.Namespace) -> dict:
    import torch

    from shardgen.sources.coco import load_split
    from shardgen.format.coco_folders import find_split
    from shardgen.text.encoder import TextEncoder

    records, _ = load_split(find_split(p.root, "train"))
    texts = list(dict.fromkeys(c for r in records for c in r.captions))[: a.encode_sample]
    encoder = TextEncoder(str(p.full))
    ids, _ = encoder.tokenize(texts)
    t0 = time.perf_counter()
    encoder.encode_ids(ids)
    seconds = time.perf_counter() - t0
    return {"items": len(texts), "unit": "cap", "encode_s": seconds,
            "note": f"full-size tower, fp32 CPU, {torch.get_num_threads()} threads (encode only)"}


def stage_build(p: Paths, a: argparse.Namespace) -> dict:
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    shutil.rmtree(p.shards, ignore_errors=True)
    n = 0
    per_shard = min(1000, -(-split_counts(a.images)[0] // 8))  # the default, or 8 shards: one per loader worker
    for split in ("train", "val"):
        cfg = BuildConfig(coco_root=p.root, split=split, out=p.shards / split, text_encoder=str(p.tiny),
                          workers=a.workers, embeddings_cache=p.cache(split), progress=a.progress,
                          samples_per_shard=per_shard)
        n += build_shards(cfg).manifest.n_samples
    return {"items": n, "unit": "img", "disk_mb": disk_mb(p.shards), "note": f"{a.workers} image processes, {per_shard}/shard"}


def stage_verify(p: Paths, a: argparse.Namespace) -> dict:
    from shardgen.publish.verify import verify

    reports = [verify(str(p.shards / split), progress=a.progress) for split in ("train", "val")]
    problems = sum(len(r.problems) for r in reports)
    return {"items": sum(r.n_samples for r in reports), "unit": "img", "note": f"{problems} problems"}


def stage_loader(p: Paths, a: argparse.Namespace) -> dict:
    from loaders import make_loader

    loader = make_loader(str(p.shards / "train"), batch_size=256, num_workers=2, shuffle=True)
    n = sum(len(batch["image"]) for batch in loader)
    return {"items": n, "unit": "img", "note": "one epoch, batch 256, 2 workers, uint8"}


def stage_coco_dataset(p: Paths, a: argparse.Namespace) -> dict:
    from torch.utils.data import DataLoader

    from loaders import COCOClipDataset

    t0 = time.perf_counter()
    ds = COCOClipDataset("train", root=p.root, embeddings=p.cache("train"))
    open_s = time.perf_counter() - t0
    loader = DataLoader(ds, batch_size=32, num_workers=2, shuffle=True, persistent_workers=True)
    it = iter(loader)
    n = sum(len(batch["image"]) for batch in itertools.islice(it, a.coco_batches))
    workers = [pid for pid in _tree(os.getpid()) if pid != os.getpid()]
    per_worker = [memory_mb(pid) for pid in workers]
    del it, loader
    uss = "/".join(f"{m['uss']:.0f}" for m in per_worker)
    return {"items": n, "unit": "img", "open_s": open_s, "main": memory_mb(os.getpid()), "workers": per_worker,
            "note": f"opened in {open_s:.1f} s; {len(ds)} images; worker private MB {uss}"}


def stage_train(p: Paths, a: argparse.Namespace) -> dict:
    from loaders import LoaderConfig
    from models.config import TrainConfig
    from models.train import train

    shutil.rmtree(p.runs, ignore_errors=True)
    batch = min(a.train_batch, max(2, split_counts(a.images)[0] // 2))
    cfg = TrainConfig(train_shards=str(p.shards / "train"), out=str(p.runs), max_steps=a.train_steps, arch=a.arch,
                      pretrained=False, warmup_steps=0, progress=False, device="cpu",
                      loader=LoaderConfig(batch_size=batch, num_workers=2, drop_last=True))
    summary = train(cfg)
    return {"items": a.train_steps * batch, "unit": "img", "note": f"{summary['steps']} steps of {batch}, {a.arch}"}


def stage_recall(p: Paths, a: argparse.Namespace) -> dict:
    """Recall@K over every val caption; caption embeddings from the val cache, image embeddings random (the
    metric's cost does not depend on them; embedding the images is the model's cost, measured by `train`)."""
    import torch

    from models.nets.metrics import recall_at_k
    from shardgen.format import load_embeddings_cache

    cache = load_embeddings_cache(p.cache("val"), mmap=True)
    row = {t: i for i, t in enumerate(cache["texts"])}
    rows = torch.tensor([row[c] for caps in cache["captions"] for c in caps])
    owner = torch.tensor([i for i, caps in enumerate(cache["captions"]) for _ in caps])
    text = cache["embeddings"][rows].float()  # [M, 512]
    image = torch.nn.functional.normalize(torch.randn(len(cache["captions"]), text.shape[1]), dim=-1)  # [N, 512]
    t0 = time.perf_counter()
    recall_at_k(image, text, owner)
    seconds = time.perf_counter() - t0
    return {"items": len(owner), "unit": "cap", "metric_s": seconds,
            "note": f"{len(cache['captions'])} images x {len(owner)} captions"}


STAGE_FUNCS = {name: globals()[f"stage_{name.replace('-', '_')}"] for name in STAGES}


# ---- driver --------------------------------------------------------------------------------------------------------

def _forward(a: argparse.Namespace) -> list[str]:
    args = ["--images", str(a.images), "--work", str(a.work), "--workers", str(a.workers), "--encode-sample",
            str(a.encode_sample), "--coco-batches", str(a.coco_batches), "--train-steps", str(a.train_steps),
            "--train-batch", str(a.train_batch), "--arch", a.arch]
    return args + ([] if a.progress else ["--quiet"])


def run_stage(name: str, a: argparse.Namespace) -> dict:
    """Run one stage in a child process; its wall time, peak tree memory and its own report."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.scale", "--stage", name, *_forward(a)],
                            stdout=subprocess.PIPE, text=True)
    peak = PeakMemory(proc.pid)
    peak.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - t0
    mem = peak.stop()
    if proc.returncode != 0:
        raise SystemExit(f"scale: stage {name} failed (exit {proc.returncode})")
    report = json.loads(out.strip().splitlines()[-1])
    work = report.get("encode_s", report.get("metric_s", report["seconds_inner"]))  # the stage's own work
    per = work / max(1, report["items"])
    return {"stage": name, "items": report["items"], "unit": report["unit"], "seconds": seconds,
            "ms_per_item": per * 1e3, "peak_rss_mb": mem["rss"], "peak_pss_mb": mem["pss"],
            "disk_mb": report.get("disk_mb", 0.0), "note": report.get("note", ""),
            "work_s": work, **{k: report[k] for k in ("main", "workers", "open_s") if k in report}}


def projection(rows: list[dict], *, cpus: int) -> list[dict]:
    """Real COCO 2014 (123,287 images, 616,767 captions) from this run's per-image and per-caption costs.

    16 cores: image stages and the CPU text tower scaled linearly from this machine's cores (optimistic for the
    text tower, whose threads scale less than linearly). GPU: `GPU_CAPTIONS_PER_S`, an assumption."""
    by = {r["stage"]: r for r in rows}
    images, captions = COCO_TRAIN + COCO_VAL, COCO_TRAIN_CAPTIONS + COCO_VAL_CAPTIONS
    img_s = {k: by[k]["ms_per_item"] / 1e3 for k in ("build", "verify") if k in by}
    cap_s = by["encode-full"]["ms_per_item"] / 1e3 if "encode-full" in by else None
    out = []
    for machine, cores, gpu in ((f"this machine ({cpus} cores)", cpus, False), ("16 cores", 16, False),
                                ("16 cores + GPU for captions", 16, True)):
        scale = cpus / cores
        enc = captions / GPU_CAPTIONS_PER_S if gpu else (captions * cap_s * scale if cap_s else float("nan"))
        build = images * img_s.get("build", float("nan")) * scale
        verify = images * img_s.get("verify", float("nan")) * scale
        out.append({"machine": machine, "encode_captions_h": enc / 3600, "build_images_h": build / 3600,
                    "verify_h": verify / 3600, "total_h": (enc + build + verify) / 3600})
    return out


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=COCO_TRAIN + COCO_VAL, help="total images (train + val)")
    p.add_argument("--work", type=Path, default=Path("bench_out/scale"), help="scratch folder (data, shards)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="sample and build processes")
    p.add_argument("--encode-sample", type=int, default=1024, help="captions for the full-size tower's cost")
    p.add_argument("--coco-batches", type=int, default=20, help="COCOClipDataset batches of 32 to read")
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--arch", default="resnet50", choices=["resnet50", "resnet18"])
    p.add_argument("--only", choices=STAGES, action="append", help="run only these stages (repeatable)")
    p.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: run one stage in this process
    return p


def main(argv: list[str] | None = None) -> int:
    a = make_parser().parse_args(argv)
    if a.images < 2:
        raise SystemExit("scale: --images must be >= 2 (one train and one val image)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.stage:
        import torch  # noqa: F401 - before the clock: interpreter start and torch import are no stage's cost

        t0 = time.perf_counter()
        report = STAGE_FUNCS[a.stage](Paths(a.work, a.images), a)
        print(json.dumps({"seconds_inner": time.perf_counter() - t0, **report}))
        return 0
    a.work.mkdir(parents=True, exist_ok=True)
    ensure_encoder(a.work, "tiny"), ensure_encoder(a.work, "full")
    rows = []
    for name in a.only or STAGES:
        rows.append(run_stage(name, a))
        print(f"scale: {name}: {rows[-1]['seconds']:.1f} s", file=sys.stderr)
    cols = ("stage", "items", "unit", "seconds", "work_s", "ms_per_item", "peak_rss_mb", "peak_pss_mb", "disk_mb", "note")
    print(table(f"scale rehearsal: {a.images} images ({'+'.join(map(str, split_counts(a.images)))}), "
                f"{os.cpu_count()} CPUs", [{c: r[c] for c in cols} for r in rows]))
    proj = projection(rows, cpus=os.cpu_count() or 1)
    print()
    print(table("projected full COCO 2014 build (123,287 images, 616,767 captions), hours", proj))
    path = write_result(f"scale-{a.images}", {"images": a.images, "split": split_counts(a.images),
                                              "stages": rows, "projection": proj,
                                              "gpu_captions_per_s_assumed": GPU_CAPTIONS_PER_S})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
