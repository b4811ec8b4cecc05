"""Caption encoding on the CPU: today's path (`TextEncoder.encode_ids`: length-sorted dynamic padding, batch 256,
fp32, torch's default threads) against thread settings, batch sizes, bf16 autocast, `torch.compile` and ONNX
Runtime, in one run, same full-size random-init CLIP text tower, same unique captions.

Every option reports captions/s, its ratio to the baseline measured in the same run, and the max abs difference of
its embeddings *as stored* (fp16) from the baseline's fp32 ones; the fp16 storage itself rounds by ~3e-5, and an
option is adoptable when it is >= 1.5x and within 1e-3. Each option is warmed up on one small batch first (and
`torch.compile` on every shape it meets), so one-off costs are reported apart from the rate.

    python -m benchmarks.encode_options --captions 4096        # ONNX Runtime rows need `pip install onnxruntime onnx`
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .common import ensure_encoder, table, write_result

TOLERANCE, ADOPT_RATIO = 1e-3, 1.5
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (input_ids, mask) [b, w] → text_embeds [b, 512]


def unique_captions(work: Path, n: int) -> list[str]:
    """n unique COCO-like captions (the sample generator's `coco_like` set, cleaned as the build cleans them)."""
    from shardgen.sources.coco import load_split
    from shardgen.format.coco_folders import find_split
    from shardgen.sources.synthetic import make_sample

    root = work / f"captions-{n}"
    if not (root / "annotations" / "captions_train2014.json").is_file():
        make_sample(root, images=math.ceil(n / 5), val_images=1, coco_like=True, workers=os.cpu_count() or 1)
    records, _ = load_split(find_split(root, "train"))
    return list(dict.fromkeys(c for r in records for c in r.captions))[:n]


def encode_sorted(forward: Forward, ids: list[list[int]], *, batch_size: int, pad_id: int) -> torch.Tensor:
    """The baseline's batching (longest first, each batch padded to its longest) around any forward function."""
    from shardgen.text.encoder import padded_batches

    out = torch.empty(len(ids), 512)
    for idx, input_ids, mask in padded_batches(ids, batch_size=batch_size, pad_id=pad_id):
        out[torch.tensor(idx)] = torch.nn.functional.normalize(forward(input_ids, mask).float(), dim=-1)
    return out


def onnx_forward(model: torch.nn.Module, folder: Path, threads: int) -> Forward | None:
    """Export the tower to ONNX and return an ONNX Runtime forward, or None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = folder / "text.onnx"
    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))

    class Embeds(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).text_embeds

    torch.onnx.export(Embeds(), example, str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["text_embeds"], dynamo=False, opset_version=17,
                      dynamic_axes={"input_ids": {0: "b", 1: "w"}, "attention_mask": {0: "b", 1: "w"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def forward(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        (emb,) = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})
        return torch.from_numpy(emb)

    return forward


def bf16_supported() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def time_option(encode: Callable[[list[list[int]]], torch.Tensor], ids: list[list[int]]) -> tuple[float, torch.Tensor,
                                                                                                   float]:
    """(warm-up seconds, embeddings, seconds for all of ids)."""
    t0 = time.perf_counter()
    encode(ids[:8])
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = encode(ids)
    return warm, emb, time.perf_counter() - t0


# long: the table of options, each a few lines; splitting it would scatter the one comparison
def options(encoder, scratch: Path) -> list[tuple[str, Callable, Callable]]:
    """(name, encode(ids) → [N, 512] fp32, context manager factory) for every option this machine can run."""
    model, pad = encoder.model, encoder.tokenizer.pad_token_id or 0
    default_threads, cores = torch.get_num_threads(), os.cpu_count() or 1

    def plain(batch: int) -> Callable:
        return lambda x: encoder.encode_ids(x, batch_size=batch)

    def threads(n: int) -> Callable:
        @contextlib.contextmanager
        def ctx():
            torch.set_num_threads(n)
            try:
                yield
            finally:
                torch.set_num_threads(default_threads)
        return ctx

    none = contextlib.nullcontext
    out = [("baseline: sorted dynamic padding, batch 256", plain(256), none)]
    out += [(f"batch {b}", plain(b), none) for b in (64, 128, 512, 1024)]
    out += [(f"{n} thread{'s' * (n > 1)}", plain(256), threads(n)) for n in sorted({1, cores, 2 * cores})
            if n != default_threads]
    if bf16_supported():
        out.append(("bf16 autocast", plain(256), lambda: torch.autocast("cpu", dtype=torch.bfloat16)))
    compiled = torch.compile(model, dynamic=True)

    def compiled_forward(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return compiled(input_ids=input_ids, attention_mask=mask).text_embeds

    out.append(("torch.compile (dynamic)", lambda x: encode_sorted(compiled_forward, x, batch_size=256, pad_id=pad),
                none))
    ort_forward = onnx_forward(model, scratch, default_threads)
    if ort_forward is not None:
        out.append(("ONNX Runtime (CPU EP)", lambda x: encode_sorted(ort_forward, x, batch_size=256, pad_id=pad),
                    none))
    return out


def run(work: Path, *, captions: int = 4096) -> dict:
    from shardgen.text.encoder import TextEncoder

    texts = unique_captions(work, captions)
    encoder = TextEncoder(str(ensure_encoder(work, "full")))
    ids, _ = encoder.tokenize(texts)
    rows, base_s, ref = [], None, None
    with tempfile.TemporaryDirectory() as scratch:
        for name, encode, ctx in options(encoder, Path(scratch)):
            with ctx():
                warm, emb, seconds = time_option(encode, ids)
            if ref is None:
                base_s, ref = seconds, emb
            diff = (emb.to(torch.float16).float() - ref).abs().max().item()  # stored fp16 vs baseline fp32
            ratio = base_s / seconds
            rows.append({"option": name, "captions/s": len(ids) / seconds, "ratio": ratio, "warmup_s": warm,
                         "max_abs_diff_fp16": diff, "adoptable": ratio >= ADOPT_RATIO and diff <= TOLERANCE})
            print(f"  {name}: {len(ids) / seconds:.0f} captions/s ({ratio:.2f}x), diff {diff:.1e}", flush=True)
    fp16_floor = (ref.to(torch.float16).float() - ref).abs().max().item()
    title = (f"caption encoding options: {len(ids)} unique captions, full-size CLIP text tower, CPU, "
             f"{torch.get_num_threads()} default threads; fp16 storage alone differs by {fp16_floor:.1e}")
    print(table(title, rows))
    write_result("encode_options", {"n_captions": len(ids), "fp16_rounding": fp16_floor, "rows": rows})
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("bench_out"), help="scratch folder (captions, encoder)")
    parser.add_argument("--captions", type=int, default=4096, help="unique captions to encode per option")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    run(args.work, captions=args.captions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
