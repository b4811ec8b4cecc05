"""The seed notebook's map-style `COCOClipDataset`, kept API-compatible: raw COCO images decoded on the fly,
caption embeddings from the `<split>_text_embeddings.pt` cache that `shardgen build` writes.

This is the slow path the shards replace (full-size JPEG decode per sample), kept for users with code written
against the notebook and as the baseline in `make bench`.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from shardgen.format import embeddings_cache_path, load_embeddings_cache
from shardgen.format.layout import find_split

from .device import CLIP_MEAN, CLIP_STD


def clip_transform(size: int = 224):
    """The seed's preprocessing: Resize(224, bicubic) → CenterCrop(224) → ToTensor → Normalize(CLIP mean/std)
    (a torchvision `Compose`; torchvision is imported here, not with the package: it pulls in half of PIL)."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


class COCOClipDataset(Dataset):
    """`dataset[i]` → {image, text_embedding, caption, image_id} (or text_embeddings/captions for all captions)."""

    def __init__(self, split: str = "train", transform=None, return_all_captions: bool = False, *,
                 root: str | Path = "coco2014", embeddings: str | Path | None = None) -> None:
        layout = find_split(root, split)
        path = Path(embeddings) if embeddings is not None else embeddings_cache_path(root, split)
        cache = load_embeddings_cache(path)
        if cache is None:
            raise FileNotFoundError(f"{path}: no caption embedding cache; create it with `shardgen build "
                                    f"--split {split} --embeddings-cache {path}` (or pass embeddings=...)")
        self.split, self.images_dir = split, layout.images_dir
        self.transform = transform if transform is not None else clip_transform()
        self.return_all_captions = return_all_captions
        row = {t: i for i, t in enumerate(cache["texts"])}
        self.embeddings = cache["embeddings"]  # [U, 512] float16
        self.image_ids = [int(i) for i in cache["image_ids"]]
        self.file_names = list(cache["file_names"])
        self.captions = [list(c) for c in cache["captions"]]
        self.rows = [[row[c] for c in caps] for caps in self.captions]
        self.random_init = bool(cache.get("random_init", False))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict:
        with Image.open(self.images_dir / self.file_names[index]) as img:
            image = self.transform(img.convert("RGB"))
        item = {"image": image, "image_id": self.image_ids[index]}
        if self.return_all_captions:
            item["text_embeddings"] = self.embeddings[self.rows[index]].float()  # [n_captions, 512]
            item["captions"] = list(self.captions[index])
        else:
            j = random.randrange(len(self.rows[index]))  # a new random caption on every access
            item["text_embedding"] = self.embeddings[self.rows[index][j]].float()  # [512]
            item["caption"] = self.captions[index][j]
        return item


def collate_all_captions(items: list[dict]) -> dict:
    """DataLoader collate for `return_all_captions=True`: pads to the most captions, with a mask."""
    n_max = max(len(it["captions"]) for it in items)
    emb = torch.zeros(len(items), n_max, items[0]["text_embeddings"].shape[-1])
    mask = torch.zeros(len(items), n_max, dtype=torch.bool)
    for i, it in enumerate(items):
        n = len(it["captions"])
        emb[i, :n], mask[i, :n] = it["text_embeddings"], True
    return {"image": torch.stack([it["image"] for it in items]), "text_embeddings": emb, "caption_mask": mask,
            "captions": [it["captions"] for it in items],
            "image_id": torch.tensor([it["image_id"] for it in items])}
