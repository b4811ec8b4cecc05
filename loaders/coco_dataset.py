"""The seed notebook's map-style `COCOClipDataset`, kept API-compatible: raw COCO images decoded on the fly,
caption embeddings from the `<split>_text_embeddings.pt` cache that `shardgen build` writes.

This is the slow path the shards replace (full-size JPEG decode per sample), kept for users with code written
against the notebook and as the baseline in `make bench`.

At COCO scale the dataset stays cheap to copy into DataLoader workers: the ~630 MB embedding table is
memory-mapped from the cache file (one copy in the page cache, shared by every worker), and captions, file names
and caption rows live in a few numpy arrays rather than ~500k Python objects, whose reference counts would make
each forked worker copy the pages they sit on.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shardgen.format import embeddings_cache_path, load_embeddings_cache, open_local
from shardgen.format.storage import IMAGE_MAX_BYTES
from shardgen.format.coco_folders import find_split

from .handover.device import CLIP_MEAN, CLIP_STD
from .errors import SourceError


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


class PackedStrings(Sequence):
    """A read-only list of strings stored as one UTF-8 buffer and offsets (two numpy arrays, no Python objects)."""

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.data[self.offsets[index]:self.offsets[index + 1]].tobytes().decode("utf-8")


def _check_file_names(cache: dict, path: Path) -> None:
    """Every file name in the cache stays inside the image folder it is joined to (no absolute path, drive or
    `..`): the cache is a file like any other, and `__getitem__` would otherwise read wherever it points."""
    for name in cache["file_names"]:
        if not isinstance(name, str) or not name or "\0" in name or any(
                pure.is_absolute() or pure.anchor or ".." in pure.parts
                for pure in (PurePosixPath(name), PureWindowsPath(name))):
            raise SourceError(f"{path}: file name {name!r:.80} would leave the image folder; refusing this cache")


def _check_images_match(cache: dict, path: Path, images_dir: Path, split: str) -> None:
    """The cache must describe this split's images: a val cache with split='train' would fail at every item."""
    first = cache["file_names"][0] if len(cache["file_names"]) else None
    if first is not None and not (images_dir / first).is_file():
        other = re.search(r"_(train|val)20\d\d_", first)
        why = f"it is the {other.group(1)} split's cache" if other and other.group(1) != split else \
            "it belongs to another COCO folder or split"
        raise SourceError(f"{path}: its first image {first} is not in {images_dir} ({why}): pass split= and "
                          "embeddings= of the same split")


class COCOClipDataset(Dataset):
    """`dataset[i]` → {image, text_embedding, caption, image_id} (or text_embeddings/captions for all captions)."""

    def __init__(self, split: str = "train", transform=None, return_all_captions: bool = False, *,
                 root: str | Path = "coco2014", embeddings: str | Path | None = None) -> None:
        layout = find_split(root, split)
        path = Path(embeddings) if embeddings is not None else embeddings_cache_path(root, split)
        cache = load_embeddings_cache(path, mmap=True)
        if cache is None:
            raise FileNotFoundError(f"{path}: no caption embedding cache; create it with `shardgen build --coco-root "
                                    f"{root} --split {split} --out shards/{split} --embeddings-cache {path}` "
                                    "(or pass embeddings= the OUT/<split>_text_embeddings.pt a build wrote)")
        _check_file_names(cache, path)
        _check_images_match(cache, path, layout.images_dir, split)
        self.split, self.images_dir = split, layout.images_dir
        self.transform = transform if transform is not None else clip_transform()
        self.return_all_captions = return_all_captions
        row = {t: i for i, t in enumerate(cache["texts"])}
        self.embeddings = cache["embeddings"]  # [U, 512] float16, memory-mapped from the cache file
        self.image_ids = cache["image_ids"].numpy().copy()  # [N] int64
        self._file_names = PackedStrings(cache["file_names"])
        self._captions = PackedStrings([c for caps in cache["captions"] for c in caps])  # every image's, in order
        self._rows = np.array([row[c] for caps in cache["captions"] for c in caps], dtype=np.int64)  # [M] table row
        self._first = np.zeros(len(cache["captions"]) + 1, dtype=np.int64)  # image i: captions first[i]:first[i+1]
        np.cumsum([len(caps) for caps in cache["captions"]], out=self._first[1:])
        self.random_init = bool(cache.get("random_init", False))
        del cache, row  # the Python lists go now; only the arrays above and the mapped table stay

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict:
        # the one opener of user-named files: a regular file below the image folder (links too), size checked first
        with open_local(self.images_dir / self._file_names[index], root=self.images_dir,
                        max_bytes=IMAGE_MAX_BYTES) as fh, Image.open(fh) as img:
            image = self.transform(img.convert("RGB"))
        item = {"image": image, "image_id": int(self.image_ids[index])}
        lo, hi = int(self._first[index]), int(self._first[index + 1])
        if self.return_all_captions:
            item["text_embeddings"] = self.embeddings[torch.from_numpy(self._rows[lo:hi])].float()  # [n_captions, 512]
            item["captions"] = [self._captions[j] for j in range(lo, hi)]
        else:
            j = random.randrange(lo, hi)  # a new random caption on every access
            item["text_embedding"] = self.embeddings[int(self._rows[j])].float()  # [512]
            item["caption"] = self._captions[j]
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
