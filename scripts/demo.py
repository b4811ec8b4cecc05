"""`make demo`: the main job end to end on the embedded sample, offline.

sample COCO folder → random-init full-size CLIP text encoder (real tokenizer) → shards (train, val) → verify →
image/caption grid PNG → stream the shards through ResNet50 + projection head + InfoNCE → summary.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from loaders import DeviceLoader, make_loader
    from models import CLIPModel, ImageEncoder, WeightsUnavailable, info_nce_loss, parameter_counts
    from shardgen.cli.main import main as shardgen
    from shardgen.cli.hints import activate_hint, python_command, tool_command

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--encoder-size", choices=["full", "tiny"], default="full")
    a = p.parse_args(argv)
    out, coco, enc = a.out, a.out / "coco2014", a.out / "clip-text-random"
    t0 = time.perf_counter()

    step(f"1. sample data: {a.images} train images in COCO 2014 layout")
    if not (coco / "annotations" / "captions_val2014.json").is_file():
        shardgen(["sample", str(coco), "--images", str(a.images)])
    step(f"2. text encoder: random-init CLIP ViT-B/32 text tower ({a.encoder_size}) + real CLIP BPE tokenizer "
         "(offline stand-in for openai/clip-vit-base-patch32)")
    if not (enc / "config.json").is_file():
        shardgen(["init-encoder", str(enc), "--size", a.encoder_size])
    for split in ("train", "val"):
        step(f"3. build {split} shards")
        code = shardgen(["build", "--coco-root", str(coco), "--split", split, "--out", str(out / "shards" / split),
                         "--text-encoder", str(enc), "--samples-per-shard", "50"])
        if code:
            return code
    for split in ("train", "val"):
        step(f"4. verify {split}")
        if shardgen(["verify", str(out / "shards" / split), "--quiet"]):
            return 1
    step("5. picture: image/caption grid")
    shardgen(["show", str(out / "shards" / "train"), "--out", str(out / "grid.png"), "--n", "12"])

    step("6. stream shards through ResNet50 + projection head (CPU here; GPU normalization path)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        encoder = ImageEncoder("resnet50", pretrained=True)
        note = "ImageNet weights"
    except WeightsUnavailable as exc:
        encoder = ImageEncoder("resnet50", pretrained=False)
        note = f"random weights ({str(exc).split(':')[0]})"
    model = CLIPModel(encoder).to(device).eval()
    counts = parameter_counts(model)
    loader = make_loader(str(out / "shards" / "train"), batch_size=32, num_workers=0)
    t_load = time.perf_counter()
    n = sum(len(b["image"]) for b in loader)
    load_rate = n / (time.perf_counter() - t_load)
    losses = []
    with torch.no_grad():
        for i, batch in enumerate(DeviceLoader(loader, device)):
            emb = model(batch["image"])  # [B, 512]
            losses.append(info_nce_loss(emb, batch["text_embedding"], model.scale()).item())
            if i == 1:
                break
    print(f"model: {counts['trainable'] / 1e6:.1f} M trainable parameters, {note}")
    print(f"loader: {n} images/epoch at {load_rate:.0f} img/s (uint8, {loader.backend} decode)")
    print(f"image batch {tuple(batch['image'].shape)} {batch['image'].dtype} → embeddings {tuple(emb.shape)}; "
          f"InfoNCE on 2 batches: {', '.join(f'{x:.3f}' for x in losses)} "
          f"(untrained: chance is ln {len(batch['image'])} = {math.log(len(batch['image'])):.3f})")

    step("summary")
    print(f"shards:  {out / 'shards'} (train, val) with manifest.json, sizes.json, shardindex.json")
    print(f"picture: {out / 'grid.png'}")
    print(f"total:   {time.perf_counter() - t0:.0f} s")
    activate = activate_hint()
    print(f"commands: {tool_command('shardgen', 'shardgen')} --help"
          + (f"  (or first `{activate}`: then shardgen and python are on PATH)" if activate else ""))
    print(f"next:    {next_command(python_command(), out)}")
    return 0


def next_command(python: str, out: Path) -> str:
    """A CPU smoke run on the demo's shards (20 steps of 32 images, then Recall@K on val), as typed here."""
    return (f"{python} -m models.train --train-shards {out / 'shards' / 'train'} --val-shards {out / 'shards' / 'val'} "
            f"--out {out / 'run'} --arch resnet18 --no-pretrained --num-workers 0 --batch-size 32 --max-steps 20")


if __name__ == "__main__":
    sys.exit(main())
