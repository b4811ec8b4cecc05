"""The qualitative retrieval pictures of `python -m models.evaluate`: free-text queries → top-5 images, shard images
→ top-5 captions, and images the model never saw (`--unseen FOLDER`) → top-5 captions, each named by the shard set
it shows so that evaluating other shards never overwrites a run's pictures."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch
from PIL import Image

from shardgen.format import open_atomic, printable_name, read_local
from shardgen.format.storage import IMAGE_MAX_BYTES

from ..nets.clip import CLIPModel
from ..errors import UserError
from .plots import retrieval_grid

MAX_UNSEEN = 8  # images in the --unseen figure
MAX_UNSEEN_PIXELS = 50_000_000  # as the build's default --max-image-pixels: a header claiming more is not decoded


def load_unseen(folder: Path) -> list[Image.Image]:
    """The first `MAX_UNSEEN` images of `folder` that decode, as RGB. Every file is read through the one opener
    of user-named files (a FIFO, a device, a directory named .jpg, a link out of the folder, a file over
    `IMAGE_MAX_BYTES` are refused before a byte is read); a file that does not decode, or whose header claims
    more than `MAX_UNSEEN_PIXELS`, is skipped. What was skipped is said in one line; none usable is a UserError."""
    images, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")):
        if len(images) == MAX_UNSEEN:
            break
        try:
            img = Image.open(io.BytesIO(read_local(path, root=folder, max_bytes=IMAGE_MAX_BYTES)))
            if img.width * img.height > MAX_UNSEEN_PIXELS:  # before decoding: a header may claim anything
                skipped.append(f"{path.name} ({img.width}x{img.height}, over {MAX_UNSEEN_PIXELS / 1e6:g} Mpx)")
                continue
            images.append(img.convert("RGB"))
        except (OSError, SyntaxError, Image.DecompressionBombError) as exc:  # unreadable, not an image, truncated
            skipped.append(f"{path.name} ({str(exc).removeprefix(f'{path}: ')})")
    if skipped:
        print(printable_name(f"note: --unseen: skipped {len(skipped)} file(s): {'; '.join(skipped)}"), file=sys.stderr)
    if not images:
        raise UserError(f"--unseen {folder}: no image that decodes (.jpg, .jpeg, .png, .webp)")
    return images


def save_png(image: Image.Image, path: Path) -> None:
    """`image` as a PNG at `path`, atomically and through no link (`shardgen.format.open_atomic`)."""
    with open_atomic(path) as fh:
        image.save(fh, format="PNG")


@torch.no_grad()
def qualitative(model: CLIPModel, emb: dict, *, queries: list[str], query_emb: torch.Tensor | None,
                n_images: int, unseen: Path | None, out_dir: Path, device: torch.device, transform=None, k: int = 5,
                warning: str = "", label: str = "shards") -> list[Path]:
    """The retrieval pictures, named by the shard set they show (`label`: `runs.results.shards_label`). `query_emb` holds
    the frozen text tower's embeddings of `queries` ([Q, 512]); `transform` turns an unseen PIL image into the
    model's input (the caller's CLIP preprocessing; needed with `unseen`)."""
    written = []
    if queries:
        q = query_emb.to(emb["image"].dtype)  # [Q, 512]
        scores, idx = (q @ emb["image"].T).topk(min(k, emb["image"].shape[0]), dim=1)
        rows = [(text, [(emb["thumbs"][j], float(s)) for s, j in zip(scores[r], idx[r])])
                for r, text in enumerate(queries)]
        written.append(out_dir / f"text_to_image-{label}.png")
        save_png(retrieval_grid(rows, title="caption -> top-5 images (cosine similarity)", warning=warning),
                 written[-1])
    if n_images:
        picks = list(range(min(n_images, emb["image"].shape[0])))
        scores, idx = (emb["image"][picks] @ emb["text"].T).topk(k, dim=1)
        rows = [(emb["thumbs"][p], [(emb["captions"][j], float(s)) for s, j in zip(scores[r], idx[r])])
                for r, p in enumerate(picks)]
        written.append(out_dir / f"image_to_text-{label}.png")
        save_png(retrieval_grid(rows, title="image -> top-5 captions (cosine similarity)", warning=warning),
                 written[-1])
    if unseen is not None:
        images = load_unseen(unseen)
        batch = torch.stack([transform(img) for img in images]).to(device)  # [n, 3, 224, 224]
        img_emb = model(batch).float().cpu()
        scores, idx = (img_emb @ emb["text"].T).topk(k, dim=1)
        rows = [(img, [(emb["captions"][j], float(s)) for s, j in zip(scores[r], idx[r])])
                for r, img in enumerate(images)]
        written.append(out_dir / f"unseen_images-{label}.png")
        title = f"unseen images from {unseen} -> top-5 captions"
        save_png(retrieval_grid(rows, title=title, warning=warning), written[-1])
    return written
