"""COCO 2014 captions: read a split's annotations with pycocotools (its folder is found by `format.layout`).

The result is a plain, sorted list of `CocoImage` records; everything downstream (encoding, packing) is a pure
function of that list and the build config.
"""

from __future__ import annotations

import contextlib
import io
import json
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .format.layout import SplitLayout


@dataclass(frozen=True)
class CocoImage:
    image_id: int
    file_name: str
    path: Path
    captions: tuple[str, ...]
    width: int
    height: int


@dataclass
class CaptionReport:
    """Problems found while reading annotations: reason → offending file names (or caption ids)."""

    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def clean_caption(text: str) -> str:
    """Normalize unicode (NFC) and whitespace: no leading/trailing blanks, no newlines, single spaces."""
    return " ".join(unicodedata.normalize("NFC", str(text)).split())


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
