"""`python -m models.evaluate`: Recall@K on a val shard set (COCO protocol, all captions) + qualitative plots.

Text embeddings come from the shards (the frozen tower's, precomputed); free-text queries are encoded on the fly
with the same frozen text encoder. Results are written as JSON next to the checkpoint and printed as a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image

from loaders import DeviceLoader, make_loader
from loaders.coco_dataset import clip_transform
from loaders.gpu import CLIP_MEAN, CLIP_STD

from .checkpoint import load_checkpoint
from .clip import CLIPModel
from .errors import UserError
from .image_encoder import ImageEncoder
from .metrics import recall_at_k
from .plots import retrieval_grid


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> CLIPModel:
    state, _ = load_checkpoint(checkpoint)
    model = CLIPModel(ImageEncoder(state["config"]["arch"], pretrained=False))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


@torch.no_grad()
def embed_shards(model: CLIPModel, shards: str, *, device: torch.device, batch_size: int = 64,
                 keep_thumbnails: bool = False) -> dict:
    """Image embeddings `[N, 512]`, caption embeddings `[M, 512]`, caption owners `[M]`, captions, thumbnails."""
    loader = make_loader(shards, batch_size=batch_size, shuffle=False, caption="all", num_workers=0)
    images, texts, owners, captions, thumbs = [], [], [], [], []
    n_images = 0
    for batch in DeviceLoader(loader, device):
        images.append(model(batch["image"]).float().cpu())  # [B, 512]
        mask = batch["caption_mask"].cpu()  # [B, n]
        emb = torch.nn.functional.normalize(batch["text_embeddings"].float().cpu(), dim=-1)  # [B, n, 512]
        for i in range(mask.shape[0]):
            n = int(mask[i].sum())
            texts.append(emb[i, :n])
            owners += [n_images + i] * n
            captions += batch["captions"][i]
        n_images += mask.shape[0]
        if keep_thumbnails:  # undo the device normalization for display
            pix = batch["image"].float().cpu()
            mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
            pix = ((pix * std + mean).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
            thumbs += [Image.fromarray(p).resize((128, 128)) for p in pix]
    return {"image": torch.cat(images), "text": torch.cat(texts), "owner": torch.tensor(owners),
            "captions": captions, "thumbs": thumbs}


def score(emb: dict) -> dict:
    """Recall@1/5/10 both ways plus the set's size and chance level."""
    n_images = int(emb["image"].shape[0])
    return {**recall_at_k(emb["image"], emb["text"], emb["owner"]), "n_images": n_images,
            "n_captions": int(emb["text"].shape[0]), "chance_text_to_image_R@5": min(1.0, 5 / n_images)}


def write_result(out_dir: Path, checkpoint: str | Path, shards: str, result: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "eval.json"
    path.write_text(json.dumps({"checkpoint": str(checkpoint), "shards": shards, **result}, indent=2) + "\n")
    return path


def evaluate_checkpoint(checkpoint: str | Path, shards: str, *, device: str = "cpu", batch_size: int = 64) -> dict:
    model = load_model(checkpoint, device)
    result = score(embed_shards(model, shards, device=torch.device(device), batch_size=batch_size))
    write_result(Path(checkpoint).parent, checkpoint, shards, result)
    return result


def format_table(result: dict) -> str:
    lines = ["direction        R@1     R@5     R@10"]
    for d, label in (("text_to_image", "text → image"), ("image_to_text", "image → text")):
        lines.append(f"{label:<15}" + "".join(f"{100 * result[f'{d}_R@{k}']:6.2f}  " for k in (1, 5, 10)))
    return "\n".join(lines)


@torch.no_grad()
def qualitative(model: CLIPModel, emb: dict, *, queries: list[str], text_encoder: str | None, n_images: int,
                unseen: Path | None, out_dir: Path, device: torch.device, k: int = 5) -> list[Path]:
    written = []
    if queries:
        from shardgen.text import TextEncoder

        q = TextEncoder(text_encoder, device=device).encode(queries).to(emb["image"].dtype)  # [Q, 512]
        scores, idx = (q @ emb["image"].T).topk(min(k, emb["image"].shape[0]), dim=1)
        rows = [(text, [(emb["thumbs"][j], float(s)) for s, j in zip(scores[r], idx[r])])
                for r, text in enumerate(queries)]
        written.append(out_dir / "text_to_image.png")
        retrieval_grid(rows, title="caption -> top-5 images (cosine similarity)").save(written[-1])
    if n_images:
        picks = list(range(min(n_images, emb["image"].shape[0])))
        scores, idx = (emb["image"][picks] @ emb["text"].T).topk(k, dim=1)
        rows = [(emb["thumbs"][p], [(emb["captions"][j], float(s)) for s, j in zip(scores[r], idx[r])])
                for r, p in enumerate(picks)]
        written.append(out_dir / "image_to_text.png")
        retrieval_grid(rows, title="image -> top-5 captions (cosine similarity)").save(written[-1])
    if unseen is not None:
        files = sorted(p for p in unseen.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))[:8]
        tf = clip_transform()
        batch = torch.stack([tf(Image.open(f).convert("RGB")) for f in files]).to(device)
        img_emb = model(batch).float().cpu()
        scores, idx = (img_emb @ emb["text"].T).topk(k, dim=1)
        rows = [(Image.open(f), [(emb["captions"][j], float(s)) for s, j in zip(scores[r], idx[r])])
                for r, f in enumerate(files)]
        written.append(out_dir / "unseen_images.png")
        retrieval_grid(rows, title=f"unseen images from {unseen} -> top-5 captions").save(written[-1])
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a training --out folder")
    p.add_argument("--shards", required=True, help="val shard folder/URL")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--query", action="append", default=[], help="free-text query (repeatable)")
    p.add_argument("--text-encoder", default=None, help="for --query (default: the one named in the manifest)")
    p.add_argument("--show-images", type=int, default=4, help="image → caption rows in the plot")
    p.add_argument("--unseen", type=Path, default=None, help="folder of arbitrary images to caption-retrieve")
    p.add_argument("--out", type=Path, default=None, help="folder for plots (default: next to the checkpoint)")
    a = p.parse_args(argv)
    ckpt = Path(a.checkpoint) / "latest.pt" if Path(a.checkpoint).is_dir() else Path(a.checkpoint)
    try:
        model = load_model(ckpt, a.device)
        emb = embed_shards(model, a.shards, device=torch.device(a.device), batch_size=a.batch_size,
                           keep_thumbnails=True)
    except (UserError, FileNotFoundError, ValueError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    result = score(emb)
    out_dir = a.out or ckpt.parent
    write_result(out_dir, ckpt, a.shards, result)
    print(f"{result['n_images']} images, {result['n_captions']} captions")
    print(format_table(result))
    encoder = a.text_encoder
    if a.query and encoder is None:
        manifest = json.loads(Path(a.shards, "manifest.json").read_text()) if Path(a.shards).is_dir() else {}
        encoder = manifest.get("text_encoder", {}).get("name")
    for path in qualitative(model, emb, queries=a.query, text_encoder=encoder, n_images=a.show_images,
                            unseen=a.unseen, out_dir=out_dir, device=torch.device(a.device)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
