"""Where COCO 2014 lies on disk: `<split>2014/` and `captions_<split>2014.json` under any nesting (official zips,
Kaggle's layout). Shared by the builder and the map-style `COCOClipDataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

SPLITS = ("train", "val")
_MAX_DEPTH = 5


@dataclass(frozen=True)
class SplitLayout:
    split: str
    images_dir: Path
    annotations: Path


def _walk(root: Path, max_depth: int = _MAX_DEPTH):
    """Yield directories below root (breadth first), not descending into image folders (they are huge)."""
    frontier = [(root, 0)]
    while frontier:
        path, depth = frontier.pop(0)
        yield path
        if depth >= max_depth or path.name.endswith("2014") and path.name[:-4] in SPLITS:
            continue
        try:
            children = sorted(e.path for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
        except OSError:
            continue
        frontier.extend((Path(c), depth + 1) for c in children)


def find_split(root: str | os.PathLike, split: str) -> SplitLayout:
    """Locate `<split>2014/` and `captions_<split>2014.json` anywhere under root (shallowest match wins)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"COCO root {str(root)!r} is not a directory")
    images_dir = annotations = None
    ann_name = f"captions_{split}2014.json"
    for d in _walk(root):
        if images_dir is None and d.name == f"{split}2014" and d != root:
            images_dir = d
        if annotations is None and (d / ann_name).is_file():
            annotations = d / ann_name
        if images_dir is not None and annotations is not None:
            break
    if images_dir is None and root.name == f"{split}2014":
        images_dir = root
    if annotations is None:
        raise UserError(f"no {ann_name} found under {root} (looked {_MAX_DEPTH} levels deep); "
                        "download the annotations with `shardgen download` or point --coco-root at the dataset")
    if images_dir is None:
        raise UserError(f"no {split}2014/ image folder found under {root}")
    return SplitLayout(split=split, images_dir=images_dir, annotations=annotations)


def describe_layout(root: str | os.PathLike) -> str:
    """A human summary of which splits were found where (used after download)."""
    lines = []
    for split in SPLITS:
        try:
            lay = find_split(root, split)
        except UserError as exc:
            lines.append(f"  {split}: not found ({exc})")
            continue
        n = sum(1 for _ in os.scandir(lay.images_dir))
        lines.append(f"  {split}: {n} files in {lay.images_dir}, captions in {lay.annotations}")
    return "\n".join(lines)
