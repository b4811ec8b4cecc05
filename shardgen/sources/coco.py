"""COCO captions (2014 and 2017 share the format): read a split's annotations into a plain, sorted list of
`ImageRecord` records (the folder is found by `format.coco_folders`); everything downstream (encoding, packing) is a pure
function of that list and the build config.

Every record is checked, because one bad record must neither crash a build nor slip into the shards:

- an image whose id is not a whole number in 0..10^12 (the 12-digit sample key), whose `file_name` is missing or
  would leave the image folder (`../`, absolute outside it, a drive) is skipped and counted (`bad_image_id`,
  `bad_file_name`, `unsafe_file_name`): no file name can point outside the image folder (`roots.relative_name`,
  which also normalizes `./a.jpg` to `a.jpg`);
- an annotation that is not an object or has no usable `image_id` is counted as `malformed_annotation`; one for an
  unknown image as `caption_without_image`; a caption that is not text (a number, null, a list) as
  `caption_not_text` (a lone surrogate, which JSON's `\\ud800` escape can spell, too), and a blank one as
  `empty_caption`: none is turned into text and embedded; a file name with a lone surrogate is `unsafe_file_name`;
- two images with one id are refused up front (`UserError`, before any encoding): annotations point at ids, so
  which captions belong to which file cannot be known.

The reader is plain JSON rather than pycocotools' `COCO.createIndex`, which keeps the last of two images with one
id without a word and stops the whole build with a KeyError on one annotation lacking `image_id`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import UserError
from ..format.coco_folders import _IMAGE_FOLDERS, _MAX_DEPTH, SPLIT_FOLDERS, SplitLayout
from ..format.names import MAX_IMAGE_ID
from .inputs import InputSpec, Loaded
from .record import ImageRecord
from .roots import check_root, list_folders, read_input, relative_name, under


CocoImage = ImageRecord  # its name until the other sources came (kept: `from shardgen import CocoImage` works)


@dataclass
class CaptionReport:
    """Problems found while reading annotations: reason → offending file names (or annotation ids)."""

    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def summary(self, examples: int = 2) -> str:
        """What was skipped, by reason, with the first few names: `bad_image_id 3 (a.jpg (image_id '1.5'), ...)`;
        for an error that says why no image is usable."""
        parts = []
        for reason, names in sorted(self.problems.items()):
            if names:
                shown = ", ".join(names[:examples]) + (", ..." if len(names) > examples else "")
                parts.append(f"{reason} {len(names)} ({shown})")
        return "; ".join(parts) or "nothing skipped"


def clean_caption(text: str) -> str:
    """Normalize unicode (NFC) and whitespace: no leading/trailing blanks, no newlines, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _read_json(annotations: Path | str) -> tuple[list, list]:
    try:
        data = read_input(annotations, "annotations file", json.load)
    except (ValueError, RecursionError) as exc:  # ValueError: not JSON, not UTF-8, > 4300-digit integers
        raise UserError(f"{annotations}: cannot read annotations ({type(exc).__name__}: {exc})".splitlines()[0]) \
            from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise UserError(f"{annotations}: malformed COCO captions file (needs 'images' and 'annotations' lists)")
    return data["images"], data["annotations"]


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls but tab and line ends, and DEL


def is_text(value: object) -> bool:
    """A str UTF-8 can encode and without control characters: JSON's `\\ud800` escapes decode to lone
    surrogates, which no tokenizer, journal or file system takes (they would fail after every caption was
    encoded), and a NUL or an ESC is binary, not a caption (an ESC sequence would also reach the terminal)."""
    if not isinstance(value, str) or _CONTROL.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """`text` as it can be written anywhere: a lone surrogate as its escape (for the counts of what was skipped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def valid_id(value: object) -> bool:
    """A COCO image id the sample key can hold: a whole number (not a bool) in 0..MAX_IMAGE_ID."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_IMAGE_ID


def _index_images(images: list, annotations: Path, report: CaptionReport, root: Path | str | None = None
                  ) -> dict[int, dict]:
    """Image id → image record (its `file_name` normalized by `roots.relative_name`), for every well-formed image;
    the rest counted by reason."""
    seen: dict[int, object] = {}
    for info in images:
        if isinstance(info, dict) and valid_id(info.get("id")):
            if info["id"] in seen:
                raise UserError(f"{annotations}: image id {info['id']} is given twice ({seen[info['id']]} and "
                                f"{info.get('file_name')}); every image needs its own id")
            seen[info["id"]] = info.get("file_name")
    by_id: dict[int, dict] = {}
    for info in images:
        if not isinstance(info, dict) or not valid_id(info.get("id")):
            label = info.get("file_name", info.get("id", "?")) if isinstance(info, dict) else repr(info)[:80]
            report.problems["bad_image_id"].append(printable(str(label)))
            continue
        name = info.get("file_name")
        if not isinstance(name, str) or not name.strip():
            report.problems["bad_file_name"].append(f"image {info['id']}")
        elif (relative := relative_name(name, root)) is None:
            report.problems["unsafe_file_name"].append(printable(name))
        else:
            by_id[info["id"]] = {**info, "file_name": relative}
    return by_id


def _group_captions(annotations: list, images: dict[int, dict], report: CaptionReport) -> dict[int, list]:
    """Image id → [(annotation id, cleaned caption)], every unusable annotation counted by reason."""
    by_image: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for ann in annotations:
        if not isinstance(ann, dict) or not valid_id(ann.get("image_id")):
            label = ann.get("id", "?") if isinstance(ann, dict) else repr(ann)[:80]
            report.problems["malformed_annotation"].append(printable(str(label)))
            continue
        image = images.get(ann["image_id"])
        if image is None:
            report.problems["caption_without_image"].append(printable(str(ann.get("id", "?"))))
            continue
        caption = ann.get("caption")
        if not is_text(caption):  # a number, null, a list, or a lone surrogate
            report.problems["caption_not_text"].append(image["file_name"])
            continue
        text = clean_caption(caption)
        if not text:
            report.problems["empty_caption"].append(image["file_name"])
            continue
        order = ann.get("id") if isinstance(ann.get("id"), int) else 0  # captions keep the annotation order
        by_image[ann["image_id"]].append((order, text))
    return by_image


def load_split(layout: SplitLayout) -> tuple[list[ImageRecord], CaptionReport]:
    """Read every image and its cleaned captions, sorted by image id; report what was skipped and why."""
    images, annotations = _read_json(layout.annotations)
    report = CaptionReport()
    by_id = _index_images(images, layout.annotations, report, layout.images_dir)
    captions = _group_captions(annotations, by_id, report)
    records = []
    for image_id in sorted(by_id):
        info = by_id[image_id]
        caps = tuple(text for _, text in sorted(captions.get(image_id, [])))
        if not caps:
            report.problems["no_captions"].append(info["file_name"])
            continue
        records.append(ImageRecord(image_id=image_id, file_name=info["file_name"],
                                 path=under(layout.images_dir, info["file_name"]), captions=caps))
    return records, report


def find_remote_split(root: str, split: str) -> SplitLayout:
    """`find_split` for a COCO root at a URL (`s3://bucket/coco`): the split's image folder and captions file
    anywhere under it, shallowest first, without listing the image folders themselves. The layout holds URLs."""
    if split not in SPLIT_FOLDERS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_FOLDERS)}")
    import fsspec

    from ..format.storage import with_timeouts

    check_root(root, "COCO root")
    folder = SPLIT_FOLDERS[split]
    ann_name = f"captions_{folder}.json"
    folders = list_folders(root, _MAX_DEPTH, skip=_IMAGE_FOLDERS)
    images = next((f for f in folders if f.rsplit("/", 1)[-1] == folder), None)
    fs, _ = fsspec.core.url_to_fs(root, **with_timeouts(root))
    annotations = next((f"{f}/{ann_name}" for f in folders if fs.isfile(f"{f.split('://', 1)[1]}/{ann_name}")), None)
    if annotations is None:
        raise UserError(f"no {ann_name} found under {root} (looked {_MAX_DEPTH} levels deep)")
    if images is None:
        raise UserError(f"no {folder}/ image folder found under {root}")
    return SplitLayout(split=split, images_dir=images, annotations=annotations)


KARPATHY_ONLY = ("restval", "train+restval", "test")  # splits that only Karpathy's split file defines


def _check(cfg) -> None:
    if cfg.split is None:
        raise ValueError("split is needed with --coco-root")
    if cfg.split in KARPATHY_ONLY:
        raise ValueError(f"split {cfg.split!r} is one of Karpathy's splits: it needs the split file "
                         "(--karpathy dataset_coco.json)")


def _source(split: str, layout: SplitLayout) -> dict | None:
    """The manifest's `source` of a COCO split: None for 2014's own train/val (as always), else year and file."""
    year = SPLIT_FOLDERS[split][-4:]
    return None if year == "2014" else {"dataset": f"coco{year}", "split": split,
                                        "captions": str(layout.annotations).rsplit("/", 1)[-1]}


def _load(cfg) -> Loaded:
    from ..format.coco_folders import find_split
    from ..format.storage import is_remote

    root = str(cfg.coco_root)
    layout = find_remote_split(root.rstrip("/"), cfg.split) if is_remote(root) else find_split(cfg.coco_root,
                                                                                                 cfg.split)
    records, report = load_split(layout)
    return Loaded(records, report, _source(cfg.split, layout), layout.annotations, str(layout.images_dir), "coco",
                  root, [layout.annotations])


# `--coco-root DIR|URL --split train|val|train2017|val2017`: shards <split>-*.tar
SPECS = [InputSpec("coco", ("coco_root",), _check, lambda cfg: cfg.split, _load)]
