"""Where COCO lies on disk: an image folder (`train2014/`, `val2017/`, ...) and its captions file
(`captions_train2014.json`, ...) under any nesting (official zips, Kaggle's layout). Shared by the builder and the
map-style `COCOClipDataset`.

A split name picks the folder and the file: `train`/`val` are COCO 2014 (as they always were), `train2017` and
`val2017` COCO 2017. The 2014 and 2017 images are the same photographs under other names
(`COCO_val2014_000000123456.jpg` vs `000000123456.jpg`) and other train/val memberships; the file names come from
the captions file, so each year is read with its own naming.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

# split name → image folder; the captions file is `captions_<folder>.json`
SPLIT_FOLDERS = {"train": "train2014", "val": "val2014", "train2017": "train2017", "val2017": "val2017"}
SPLITS = tuple(SPLIT_FOLDERS)
_IMAGE_FOLDERS = frozenset(SPLIT_FOLDERS.values())
_MAX_DEPTH = 5


@dataclass(frozen=True)
class SplitLayout:
    split: str
    images_dir: Path | str  # a URL (str) for a COCO root on S3 (`sources.coco.find_remote_split`)
    annotations: Path | str


def _walk(root: Path, max_depth: int = _MAX_DEPTH):
    """Yield directories below root (breadth first), not descending into image folders (they are huge)."""
    frontier = [(root, 0)]
    while frontier:
        path, depth = frontier.pop(0)
        yield path
        if depth >= max_depth or path.name in _IMAGE_FOLDERS:
            continue
        try:
            children = sorted(e.path for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
        except OSError:
            continue
        frontier.extend((Path(c), depth + 1) for c in children)


def _root_dir(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"COCO root {str(root)!r} is not a directory")
    return root


def _shallowest(found: list[Path], root: Path, what: str) -> Path | None:
    """The one shallowest of `found` (paths below root), None when there is none. Two at that depth are
    ambiguous (a second, partial copy of a folder beside the real one): UserError naming both."""
    if not found:
        return None
    depth = min(len(p.relative_to(root).parts) for p in found)
    top = [p for p in found if len(p.relative_to(root).parts) == depth]
    if len(top) > 1:
        raise UserError(f"{what}: {top[0]} and {top[1]}" + (f" (and {len(top) - 2} more)" if len(top) > 2 else "")
                        + f" lie at the same depth under {root}; point --coco-root at the one to use")
    return top[0]


def find_split(root: str | os.PathLike, split: str) -> SplitLayout:
    """Locate the split's image folder and captions file anywhere under root (the shallowest match; two at the
    same depth are refused, naming both)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = _root_dir(root)
    folder = SPLIT_FOLDERS[split]
    ann_name = f"captions_{folder}.json"
    folders, files = [], []
    for d in _walk(root):
        if d.name == folder and d != root:
            folders.append(d)
        if (d / ann_name).is_file():
            files.append(d / ann_name)
    images_dir = _shallowest(folders, root, f"two {folder}/ image folders")
    annotations = _shallowest(files, root, f"two {ann_name} files")
    if images_dir is None and root.name == folder:
        images_dir = root
    if annotations is None:
        raise UserError(f"no {ann_name} found under {root} (looked {_MAX_DEPTH} levels deep); "
                        "download the annotations with `shardgen download` or point --coco-root at the dataset")
    if images_dir is None:
        raise UserError(f"no {folder}/ image folder found under {root}")
    return SplitLayout(split=split, images_dir=images_dir, annotations=annotations)


def find_image_folder(root: str | os.PathLike, folder: str) -> Path:
    """Locate the image folder `folder` (one of `SPLIT_FOLDERS`' values, e.g. `val2014`) anywhere under root, for
    split files that name images by folder and file name (Karpathy's `dataset_coco.json`); two at the same
    depth are refused, naming both."""
    if folder not in _IMAGE_FOLDERS:
        raise UserError(f"unknown image folder {folder!r}; expected one of {', '.join(sorted(_IMAGE_FOLDERS))}")
    root = _root_dir(root)
    if root.name == folder:
        return root
    found = _shallowest([d for d in _walk(root) if d.name == folder and d != root], root,
                        f"two {folder}/ image folders")
    if found is None:
        raise UserError(f"no {folder}/ image folder found under {root} (looked {_MAX_DEPTH} levels deep)")
    return found


def describe_layout(root: str | os.PathLike) -> str:
    """A human summary of which splits were found where (used after download): COCO 2014 always, 2017 if there."""
    lines = []
    for split in SPLITS:
        try:
            lay = find_split(root, split)
        except UserError as exc:
            if split.endswith("2017"):
                continue
            lines.append(f"  {split}: not found ({exc})")
            continue
        n = sum(1 for _ in os.scandir(lay.images_dir))
        lines.append(f"  {split}: {n} files in {lay.images_dir}, captions in {lay.annotations}")
    return "\n".join(lines)
