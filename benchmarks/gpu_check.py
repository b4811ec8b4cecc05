"""`make gpu-check`: every GPU measurement of the project in one prepared command, within 8 minutes on one GPU with
≤ 16 cores; on a machine without CUDA the same parts at toy sizes on the CPU (the test suite runs that, so this
script cannot rot unnoticed).

Parts, in order; each is timed and guarded: one that fails, or would not fit in what is left of `--budget-s`, is
recorded as such and the others still run, and the results file is rewritten after every part.

  data       the embedded synthetic COCO sample (`shardgen.sources.synthetic`, 20k images) built into 224 px shards; the
             text embeddings come from the tiny random-init tower (their values do not matter for speed)
  p6-*       P6: `python -m models.train`, ResNet50 + head, batch 256, channels-last, `--precision auto`, random
             init: steady-state steps/s with `--synthetic` (the ceiling: no data loading) vs our loader over the
             local shards with CPU decode (one worker per core) and with `--decode gpu` (nvJPEG); the ratio to the
             ceiling and the loop's data-wait share. Goal: ≥ 0.95 of the ceiling
  tests      the CUDA-only tests (`pytest -m gpu`)
  decode     batched nvJPEG decode (`loaders.decode_jpegs` on the GPU) vs one CPU core running the loader's
             decoder, on the same stored JPEGs
  captions   caption encoding with the full-size random-init CLIP text tower in fp32, fp16 and bf16 autocast:
             captions/s (model time, tokenized beforehand) and the max |difference| from fp32 after both are
             rounded to fp16, the shards' storage type
  compile    `--synthetic --compile` vs `--synthetic`: steady-state steps/s after compilation

Training runs in subprocesses (the CLI users run; a crash or a hang costs that part only, and its time is capped).
Results: benchmarks/results/gpu.json on CUDA, <work>/gpu.json without (toy numbers never overwrite GPU ones).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from .common import RESULTS, ensure_encoder, table

ROOT = Path(__file__).resolve().parents[1]


class Sizes(NamedTuple):
    images: int  # in the sample and the shards
    image_size: int
    arch: str
    batch: int
    steps: int  # per P6 run
    warm: int  # steps left out of the steady-state rate (cuDNN autotuning, worker start, compilation)
    log_every: int
    captions: int
    decode_images: int
    text: str  # text tower size for the caption part


GPU_SIZES = Sizes(images=20_000, image_size=224, arch="resnet50", batch=256, steps=240, warm=40, log_every=10,
                  captions=20_000, decode_images=4096, text="full")
TOY_SIZES = Sizes(images=24, image_size=32, arch="resnet18", batch=8, steps=4, warm=2, log_every=2, captions=64,
                  decode_images=24, text="tiny")

# Seconds a part is expected to take on the GPU machine; a part starts only if this much of the budget is left.
ESTIMATES = {"data": 120, "p6-synthetic": 45, "p6-cpu-decode": 60, "p6-gpu-decode": 60, "tests": 90, "decode": 30,
             "captions": 60, "compile": 150}
PARTS = tuple(ESTIMATES)
P6_GOAL = 0.95  # of the synthetic step rate
NEEDS_CUDA = {"tests": "no CUDA: every CUDA-only test would skip",
              "compile": "no CUDA: inductor takes minutes on a CPU (test_step.py covers --compile)"}


class Check(NamedTuple):
    work: Path
    sizes: Sizes
    device: torch.device
    cores: int
    deadline: float  # time.monotonic() by which everything should be done
    toy: bool

    def left(self) -> float:
        return self.deadline - time.monotonic()


# --- data -----------------------------------------------------------------------------------------------------------

def ensure_shards(check: Check) -> dict:
    """The sample and its shards under `work` (kept for a rerun)."""
    from shardgen.sharding.pipeline import BuildConfig, build_shards
    from shardgen.sources.synthetic import make_sample

    s = check.sizes
    workers = 1 if check.toy else check.cores  # a pool costs more than 24 images
    root = check.work / f"coco-{s.images}"
    if not (root / "annotations" / "captions_val2014.json").is_file():  # written last
        make_sample(root, images=s.images, val_images=1, workers=workers, progress=False)
    shards = check.work / f"shards-{s.images}-{s.image_size}"
    if not (shards / "manifest.json").is_file():
        build_shards(BuildConfig(coco_root=root, split="train", out=shards, image_size=s.image_size,
                                 text_encoder=str(ensure_encoder(check.work, "tiny")), workers=workers,
                                 samples_per_shard=max(8, s.images // 40), progress=False))
    urls = sorted(str(p) for p in shards.glob("train-*.tar"))
    return {"coco_root": str(root), "shards": str(shards), "n_shards": len(urls),
            "shard_mb": round(sum(os.path.getsize(u) for u in urls) / 1e6, 1)}


# --- P6 and compile: the training CLI in a subprocess ---------------------------------------------------------------

def steady_rate(records: list[dict], *, warm: int, batch: int) -> dict:
    """Rates over the logged windows after step `warm`: samples / seconds summed over the windows (a time-weighted
    mean), and the data-wait share weighted the same way."""
    steps = samples = seconds = waited = 0.0
    previous = 0
    for r in records:
        n, previous = r["step"] - previous, r["step"]
        if r["step"] - n < warm or n <= 0:
            continue
        dt = n * batch / r["samples_per_s"]
        steps, samples, seconds, waited = steps + n, samples + n * batch, seconds + dt, waited + r["data_wait"] * dt
    if not seconds:
        raise RuntimeError(f"no logged window after step {warm} in {len(records)} records")
    return {"steps_per_s": steps / seconds, "img_per_s": samples / seconds, "data_wait": waited / seconds,
            "steps_measured": int(steps)}


def train_run(check: Check, name: str, shards: str, *extra: str) -> dict:
    """`python -m models.train` on `shards` with `extra` options; its steady-state rate from metrics.jsonl."""
    s = check.sizes
    out = check.work / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "models.train", "--train-shards", shards, "--out", str(out), "--arch", s.arch,
           "--no-pretrained", "--batch-size", str(s.batch), "--max-steps", str(s.steps), "--warmup-steps", "10",
           "--log-every", str(s.log_every), "--checkpoint-every", str(10 ** 9), "--keep-checkpoints", "0",
           "--device", check.device.type, "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(10.0, check.left()), check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    start = next((line for line in proc.stderr.splitlines() if line.startswith("train: ")), "")
    precision = re.search(r"precision (\w+)", start)
    return {**steady_rate(records, warm=s.warm, batch=s.batch), "seconds": seconds,
            "first_window_s": s.log_every * s.batch / records[0]["samples_per_s"],
            "precision": precision.group(1) if precision else None, "options": list(extra)}


def p6_options(check: Check) -> dict[str, list[str]]:
    workers = str(check.cores)
    return {"p6-synthetic": ["--synthetic"],
            "p6-cpu-decode": ["--num-workers", workers, "--decode-threads", "1"],
            "p6-gpu-decode": ["--decode", "gpu", "--num-workers", str(max(1, check.cores // 2)),
                              "--decode-threads", "1"],
            "compile": ["--synthetic", "--compile"]}


# --- CUDA-only tests ------------------------------------------------------------------------------------------------

def cuda_tests(check: Check) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=max(10.0, min(240.0, check.left())))
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail)}
    result = {"summary": tail, **counts, "exit": proc.returncode}
    if proc.returncode not in (0, 5):  # 5: nothing collected
        result["output_tail"] = proc.stdout[-4000:]
        raise PartFailed(f"pytest exit {proc.returncode}: {tail}", result)
    return result


# --- decode ---------------------------------------------------------------------------------------------------------

def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_on_one_core(jpgs: list[bytes], size: int) -> float:
    """img/s of one thread decoding with the loader's decoder into one reused buffer (the P2 floor's loop)."""
    import numpy as np

    from loaders.shape.decode import available_backends, decode_into

    backend, out = available_backends()[0], np.empty((size, size, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for data in jpgs:
        decode_into(data, out, backend=backend)
    return len(jpgs) / (time.perf_counter() - t0)


def decode_throughput(check: Check, shards: str) -> dict:
    """Batched decode on the device (nvJPEG on CUDA) vs one core decoding with the loader's own decoder."""
    from loaders import decode_jpegs

    from .loader import stored_jpegs

    jpgs = stored_jpegs(sorted(str(p) for p in Path(shards).glob("train-*.tar")))[:check.sizes.decode_images]
    tensors = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpgs]
    batch = min(256, len(tensors))
    decode_jpegs(tensors[:batch], device=check.device)  # warm-up: decoder handles, memory
    _synchronize(check.device)
    t0 = time.perf_counter()
    for i in range(0, len(tensors) - batch + 1, batch):
        images = decode_jpegs(tensors[i:i + batch], device=check.device)  # [batch, 3, S, S] uint8
    _synchronize(check.device)
    device_rate = (len(tensors) // batch * batch) / (time.perf_counter() - t0)
    core_rate = decode_on_one_core(jpgs, check.sizes.image_size)
    return {"n_images": len(jpgs), "batch": batch, "image_shape": list(images.shape[1:]),
            "device_img_per_s": device_rate, "cpu_core_img_per_s": core_rate,
            "device_over_core": device_rate / core_rate}


# --- captions -------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def encode_as(model, ids: list[list[int]], *, dtype: torch.dtype | None, device: torch.device, pad_id: int,
              batch_size: int = 256) -> torch.Tensor:
    """Like `TextEncoder.encode_ids` (longest first, each batch padded to its longest), with the autocast dtype
    chosen here; L2-normalized float32 `[N, D]` on the device."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    out = torch.empty(len(ids), model.config.projection_dim, device=device)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        tokens = torch.full((len(idx), len(ids[idx[0]])), pad_id, dtype=torch.long)
        mask = torch.zeros_like(tokens)
        for row, i in enumerate(idx):
            tokens[row, :len(ids[i])], mask[row, :len(ids[i])] = torch.tensor(ids[i]), 1
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            emb = model(input_ids=tokens.to(device), attention_mask=mask.to(device)).text_embeds  # [b, D]
        out[torch.tensor(idx, device=device)] = torch.nn.functional.normalize(emb.float(), dim=-1)
    return out


def caption_encoding(check: Check, coco_root: str) -> dict:
    from shardgen.sources.coco import load_split
    from shardgen.format.coco_folders import find_split
    from shardgen.text.encoder import TextEncoder

    records, _ = load_split(find_split(Path(coco_root), "train"))
    texts = [c for r in records for c in r.captions][:check.sizes.captions]
    encoder = TextEncoder(str(ensure_encoder(check.work, check.sizes.text)), device=check.device)
    ids, _ = encoder.tokenize(texts)
    pad_id = encoder.tokenizer.pad_token_id or 0
    rows, reference = {}, None
    for name, dtype in (("fp32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        encode_as(encoder.model, ids[:256], dtype=dtype, device=check.device, pad_id=pad_id)  # warm-up
        _synchronize(check.device)
        t0 = time.perf_counter()
        emb = encode_as(encoder.model, ids, dtype=dtype, device=check.device, pad_id=pad_id)
        _synchronize(check.device)
        seconds = time.perf_counter() - t0
        stored = emb.half().float()  # what a shard keeps
        reference = stored if reference is None else reference
        rows[name] = {"captions_per_s": len(ids) / seconds,
                      "max_abs_diff_vs_fp32": (stored - reference).abs().max().item()}
    return {"n_captions": len(ids), "tower": check.sizes.text, "rows": rows}


# --- the run --------------------------------------------------------------------------------------------------------

class PartFailed(Exception):
    """A part that ran but did not succeed, with what it measured before failing."""

    def __init__(self, message: str, result: dict) -> None:
        super().__init__(message)
        self.result = result


def run_part(check: Check, name: str, fn: Callable[[], dict], results: dict, path: Path) -> dict | None:
    """Run one part within the budget; record ok / failed / skipped, its seconds, and rewrite the results file."""
    estimate = ESTIMATES[name] * (0.05 if check.toy else 1.0)
    if check.left() < estimate:
        results["parts"][name] = {"status": "skipped", "reason": f"{check.left():.0f} s left, needs ~{estimate:.0f} s"}
        write_results(path, results)
        return None
    print(f"gpu-check: {name} ({check.left():.0f} s left) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    entry: dict = {}
    try:
        entry = {"status": "ok", "result": fn()}
    except PartFailed as exc:
        entry = {"status": "failed", "error": str(exc), "result": exc.result}
    except subprocess.TimeoutExpired as exc:
        entry = {"status": "failed", "error": f"timed out after {exc.timeout:.0f} s (budget)"}
    except Exception as exc:  # noqa: BLE001 - a broken part must not cost the others' results; its traceback is kept
        entry = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:2000]}",
                 "traceback": traceback.format_exc()[-4000:]}
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    results["parts"][name] = entry
    write_results(path, results)
    if entry["status"] == "failed":
        print(f"gpu-check: {name} failed: {entry['error'][:300]}", file=sys.stderr, flush=True)
    return entry.get("result") if entry["status"] == "ok" else None


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def machine(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip() or None
    except OSError:  # no git on the machine
        commit = None
    info = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "device": str(device), "commit": commit,
            "dev_shm_gb": round(shutil.disk_usage("/dev/shm").total / 2 ** 30, 1)  # the loader's batch slots live here
            if os.path.isdir("/dev/shm") else None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                    bf16=torch.cuda.is_bf16_supported(including_emulation=False))
    return info


def summary_rows(parts: dict, *, cuda: bool) -> list[dict]:
    """The one table: a row per measurement, each with its ratio to the baseline of its part."""
    def ok(name):
        return parts.get(name, {}).get("result") if parts.get(name, {}).get("status") == "ok" else None

    rows = []
    ceiling = ok("p6-synthetic")
    for name, what in (("p6-synthetic", "P6 --synthetic (ceiling)"), ("p6-cpu-decode", "P6 loader, CPU decode"),
                       ("p6-gpu-decode", "P6 loader, --decode gpu"), ("compile", "P6 --synthetic --compile")):
        r = ok(name)
        if r:
            rows.append({"measurement": f"{what} [{r['precision']}]", "rate": r["steps_per_s"], "unit": "steps/s",
                         "x baseline": r["steps_per_s"] / ceiling["steps_per_s"] if ceiling else float("nan"),
                         "note": f"{r['img_per_s']:.0f} img/s, data wait {r['data_wait']:.1%}"})
    if r := ok("decode"):
        rows.append({"measurement": "decode: one CPU core (loader's decoder)", "rate": r["cpu_core_img_per_s"],
                     "unit": "img/s", "x baseline": 1.0, "note": f"{r['n_images']} stored JPEGs"})
        rows.append({"measurement": f"decode: batched on the {'GPU (nvJPEG)' if cuda else 'CPU (torchvision)'}",
                     "rate": r["device_img_per_s"], "unit": "img/s", "x baseline": r["device_over_core"],
                     "note": f"batch {r['batch']}"})
    if r := ok("captions"):
        base = r["rows"]["fp32"]["captions_per_s"]
        for dtype, v in r["rows"].items():
            rows.append({"measurement": f"captions: {r['tower']} text tower, {dtype}", "rate": v["captions_per_s"],
                         "unit": "captions/s", "x baseline": v["captions_per_s"] / base,
                         "note": f"max |Δ| vs fp32 after fp16 rounding {v['max_abs_diff_vs_fp32']:.2e}"})
    for name, entry in parts.items():
        if entry["status"] != "ok":
            rows.append({"measurement": name, "rate": float("nan"), "unit": "", "x baseline": float("nan"),
                         "note": f"{entry['status']}: {(entry.get('error') or entry.get('reason', ''))[:70]}"})
    if r := ok("tests"):
        rows.append({"measurement": "CUDA-only tests", "rate": float(r.get("passed", 0)), "unit": "passed",
                     "x baseline": float("nan"), "note": r["summary"][:70]})
    return rows


def p6_summary(parts: dict) -> dict:
    """The loader's step rates as fractions of the synthetic ceiling, against the goal."""
    rates = {name: parts[name]["result"]["steps_per_s"] for name in ("p6-synthetic", "p6-cpu-decode", "p6-gpu-decode")
             if parts.get(name, {}).get("status") == "ok"}
    if "p6-synthetic" not in rates:
        return {"goal": P6_GOAL}
    ratios = {name: rate / rates["p6-synthetic"] for name, rate in rates.items() if name != "p6-synthetic"}
    return {"goal": P6_GOAL, "ratio_to_synthetic": ratios, "met": {n: r >= P6_GOAL for n, r in ratios.items()}}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("bench_out/gpu"), help="scratch folder (sample, shards, runs)")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="wall-clock budget; a part starts only if its estimated time is left (default: %(default)s)")
    p.add_argument("--results", type=Path, default=None,
                   help="results JSON (default: benchmarks/results/gpu.json on CUDA, <work>/gpu.json without)")
    p.add_argument("--only", choices=PARTS, action="append", help="run only these parts (repeatable; data is built when a part needs it)")
    p.add_argument("--toy", action="store_true", help="toy sizes even on a GPU (a quick smoke run)")
    p.add_argument("--images", type=int, default=None, help="sample images (default: 20000 on CUDA, 24 on CPU)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = make_parser().parse_args(argv)
    start = time.monotonic()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    toy = a.toy or not cuda
    sizes = TOY_SIZES if toy else GPU_SIZES
    sizes = sizes._replace(images=a.images) if a.images else sizes
    a.work.mkdir(parents=True, exist_ok=True)
    path = a.results or (RESULTS / "gpu.json" if cuda and not toy else a.work / "gpu.json")
    if not cuda:
        print(f"gpu-check: no GPU found (torch.cuda.is_available() is False): running every part on the CPU at toy "
              f"sizes; results in {path}", file=sys.stderr)
    check = Check(a.work.resolve(), sizes, device, os.cpu_count() or 1, start + a.budget_s, toy)
    results = {"machine": {}, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cuda": cuda, "toy": toy,
               "sizes": sizes._asdict(), "budget_s": a.budget_s, "parts": {}}
    chosen = set(a.only or PARTS)
    data = run_part(check, "data", lambda: ensure_shards(check), results, path) if chosen - {"tests"} else None
    results["machine"] = machine(device)  # after the data part's process pools: this initializes CUDA here
    options = p6_options(check)
    for name in PARTS[1:]:
        if name not in chosen:
            continue
        if name in NEEDS_CUDA and not cuda:
            results["parts"][name] = {"status": "skipped", "reason": NEEDS_CUDA[name]}
            continue
        if data is None and name != "tests":
            results["parts"][name] = {"status": "skipped", "reason": "no data (the data part failed)"}
            continue
        fn = {"tests": lambda: cuda_tests(check), "decode": lambda: decode_throughput(check, data["shards"]),
              "captions": lambda: caption_encoding(check, data["coco_root"])}.get(
            name, lambda name=name: train_run(check, name, data["shards"], *options[name]))
        run_part(check, name, fn, results, path)
    results["total_s"] = round(time.monotonic() - start, 1)
    results["p6"] = p6_summary(results["parts"])
    results["rows"] = summary_rows(results["parts"], cuda=cuda)
    write_results(path, results)
    where = results["machine"].get("gpu", "CPU, toy sizes")
    print(table(f"gpu-check on {where}, {check.cores} cores, {results['total_s']:.0f} s (P6 goal: loader ≥ 0.95 × "
                f"synthetic)", results["rows"]))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
