"""COCO 2014 on disk: find the layout (official zips, Kaggle, any nesting) and read captions with pycocotools.

The result is a plain, sorted list of `CocoImage` records; everything downstream (encoding, packing) is a pure
function of that list and the build config.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

SPLITS = ("train", "val")
_MAX_DEPTH = 5


@dataclass(frozen=True)
class CocoImage:
    image_id: int
    file_name: str
    path: Path
    captions: tuple[str, ...]
    width: int
    height: int


@dataclass(frozen=True)
class SplitLayout:
    split: str
    images_dir: Path
    annotations: Path


@dataclass
class CaptionReport:
    """Problems found while reading annotations: reason → offending file names (or caption ids)."""

    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def clean_caption(text: str) -> str:
    """Normalize unicode (NFC) and whitespace: no leading/trailing blanks, no newlines, single spaces."""
    return " ".join(unicodedata.normalize("NFC", str(text)).split())


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


def _load_coco(annotations: Path):
    from pycocotools.coco import COCO

    try:
        with annotations.open("rb") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{annotations}: cannot read annotations ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise UserError(f"{annotations}: malformed COCO captions file (needs 'images' and 'annotations' lists)")
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
            coco.createIndex()
    except (KeyError, TypeError) as exc:
        raise UserError(f"{annotations}: malformed COCO captions file (missing {exc})") from exc
    return coco


def load_split(layout: SplitLayout) -> tuple[list[CocoImage], CaptionReport]:
    """Read every image and its cleaned captions, sorted by image id; report images without captions."""
    coco = _load_coco(layout.annotations)
    report = CaptionReport()
    by_image: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for ann in coco.anns.values():
        try:
            image_id, caption = int(ann["image_id"]), ann["caption"]
        except (KeyError, TypeError, ValueError):
            report.problems["malformed_annotation"].append(str(ann.get("id", "?")))
            continue
        if image_id not in coco.imgs:
            report.problems["caption_without_image"].append(str(ann.get("id", "?")))
            continue
        text = clean_caption(caption)
        if not text:
            report.problems["empty_caption"].append(str(coco.imgs[image_id].get("file_name", image_id)))
            continue
        by_image[image_id].append((int(ann.get("id", 0)), text))

    images = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        try:
            file_name = str(info["file_name"])
        except KeyError as exc:
            raise UserError(f"{layout.annotations}: image {image_id} has no file_name") from exc
        caps = tuple(text for _, text in sorted(by_image.get(image_id, [])))
        if not caps:
            report.problems["no_captions"].append(file_name)
            continue
        images.append(CocoImage(
            image_id=int(image_id), file_name=file_name, path=layout.images_dir / file_name, captions=caps,
            width=int(info.get("width", 0) or 0), height=int(info.get("height", 0) or 0),
        ))
    return images, report
