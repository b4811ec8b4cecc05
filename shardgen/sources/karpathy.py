"""Karpathy's splits: read `dataset_coco.json` (from `caption_datasets.zip`, Karpathy & Fei-Fei 2015) into the
same sorted `ImageRecord` list as `coco.load_split`, with the images from the COCO 2014 folders.

The file tags each of COCO 2014's 123,287 images `train` (82,783), `restval` (30,504), `val` (5,000) or `test`
(5,000); the retrieval literature trains on train+restval ("113k") and reports on the 5k test images. Captions come
from the file's `sentences[].raw`, which is what published results use; no COCO annotations file is read.

The file is checked as `coco.py` checks COCO's: a file that is not a split file (not JSON, no `images` list, an
entry that is not an object, an unknown split tag, a `cocoid` that is not a whole number, one id twice) is a
`UserError` naming the entry; an image whose `filepath` is not `train2014`/`val2014` (`bad_filepath`) or whose
`filename` would leave its folder (`unsafe_file_name`: `../`, absolute, a drive) is skipped and counted, as are
captions that are not text or blank and images left without one.

Karpathy's Flickr30k and Flickr8k files (`dataset_flickr30k.json`, `dataset_flickr8k.json`) have the same format
without COCO's `cocoid`/`filepath`: `load_flickr` reads them with the images under one `--image-root`, keyed by the
file's `imgid`. Retrieval papers report Flickr30k on its 1,000-image test split (`models.evaluate --protocol
flickr30k-1k`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .coco import (
    CaptionReport,
    clean_caption,
    is_text,
    printable,
    load_split,
    valid_id,
)
from ..config import KARPATHY_SPLITS
from ..errors import UserError
from ..format.storage import redact
from ..format.coco_folders import find_image_folder, find_split
from .inputs import InputSpec, Loaded
from .record import ImageRecord
from .roots import as_root, check_root, read_input, relative_name, under

IMAGE_FOLDERS = ("train2014", "val2014")
TAGS = ("train", "restval", "val", "test")
FLICKR_TAGS = ("train", "val", "test")


@dataclass(frozen=True)
class KarpathySplit:
    """The images of one Karpathy split, what was skipped, and the manifest's record of where the split came from."""

    records: list[ImageRecord]
    report: CaptionReport
    source: dict[str, Any]


def _drop_tokens(obj: dict) -> dict:
    """The file's pre-tokenized `tokens` lists are half its objects and unused here: drop them while parsing."""
    obj.pop("tokens", None)
    return obj


def _read_images(path: Path | str) -> tuple[list, str]:
    """The split file's `images` (a local path or a URL) and the sha256 of its bytes."""
    try:
        raw = read_input(path, "Karpathy split file", lambda fh: fh.read())
        data = json.loads(raw, object_hook=_drop_tokens)
    except (ValueError, RecursionError) as exc:  # ValueError: not JSON, not UTF-8, > 4300-digit integers
        raise UserError(f"{redact(str(path))}: cannot read the Karpathy split file ({type(exc).__name__}: {exc})"
                        .splitlines()[0]) from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{redact(str(path))}: not a Karpathy split file (needs an 'images' list, as in "
                        "dataset_coco.json)")
    return data["images"], hashlib.sha256(raw).hexdigest()


def _file_name(split_file: Path | str) -> str:
    """The split file's base name (`dataset_flickr30k.json`), for a path or a URL."""
    return str(split_file).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _check_entry(path: Path, i: int, entry: object) -> None:
    """The fields every entry of a real split file has, with their types; anything else is another file."""
    if not isinstance(entry, dict):
        raise UserError(f"{path}: images[{i}] is not an object")
    if entry.get("split") not in TAGS:
        raise UserError(f"{path}: images[{i}]: split {entry.get('split')!r:.40} is not one of {', '.join(TAGS)}")
    if "cocoid" not in entry and "imgid" in entry:
        raise UserError(f"{path}: images[{i}] has no cocoid: not a COCO split file (Flickr30k's or Flickr8k's?); "
                        "give its image folder with --image-root instead of --coco-root")
    if not valid_id(entry.get("cocoid")):
        raise UserError(f"{path}: images[{i}]: cocoid {entry.get('cocoid')!r:.40} is not a COCO image id")
    for name, kind in (("filepath", str), ("filename", str), ("sentences", list)):
        if not isinstance(entry.get(name), kind):
            raise UserError(f"{path}: images[{i}]: {name} is missing or not a {kind.__name__}")


def _captions(entry: dict, report: CaptionReport) -> tuple[str, ...]:
    caps = []
    for sentence in entry["sentences"]:
        raw = sentence.get("raw") if isinstance(sentence, dict) else None
        if not is_text(raw):  # not a string, or a lone surrogate
            report.problems["caption_not_text"].append(printable(entry["filename"]))
        elif not (text := clean_caption(raw)):
            report.problems["empty_caption"].append(printable(entry["filename"]))
        else:
            caps.append(text)
    return tuple(caps)


def _image_path(entry: dict, folder: Callable[[str], Path], report: CaptionReport) -> Path | None:
    """Where the entry's image lies, or None (counted) when its folder or name could point anywhere else."""
    name, where = entry["filename"], entry["filepath"]
    if where not in IMAGE_FOLDERS:
        report.problems["bad_filepath"].append(printable(f"{where[:80]}/{name[:80]}"))
        return None
    relative = relative_name(name)
    if relative is None:
        report.problems["unsafe_file_name"].append(printable(name[:200]))
        return None
    return under(folder(where), relative)


def load_karpathy(split_file: str | Path, coco_root: str | Path, split: str) -> KarpathySplit:
    """Every image of Karpathy split `split` (a `KARPATHY_SPLITS` key, e.g. `test` or `train+restval`) with its
    cleaned captions, sorted by COCO id; the image folders are looked up under `coco_root` when first needed."""
    if split not in KARPATHY_SPLITS:
        raise UserError(f"unknown Karpathy split {split!r}; expected one of {', '.join(KARPATHY_SPLITS)}")
    path = split_file if "://" in str(split_file) else Path(split_file)
    entries, digest = _read_images(path)
    seen: dict[int, int] = {}
    for i, entry in enumerate(entries):
        _check_entry(path, i, entry)
        if entry["cocoid"] in seen:
            raise UserError(f"{path}: images[{i}]: cocoid {entry['cocoid']} is also images[{seen[entry['cocoid']]}]; "
                            "every image needs its own id")
        seen[entry["cocoid"]] = i
    folders: dict[str, Path] = {}

    def folder(name: str) -> Path:
        if name not in folders:
            folders[name] = find_image_folder(coco_root, name)
        return folders[name]

    wanted = KARPATHY_SPLITS[split]
    report = CaptionReport()
    records = []
    for entry in sorted((e for e in entries if e["split"] in wanted), key=lambda e: e["cocoid"]):
        image = _image_path(entry, folder, report)
        if image is None:
            continue
        caps = _captions(entry, report)
        if not caps:
            report.problems["no_captions"].append(printable(entry["filename"]))
            continue
        records.append(ImageRecord(image_id=entry["cocoid"], file_name=entry["filename"], path=image, captions=caps))
    source = {"dataset": "coco2014", "split": split, "split_file": _file_name(path), "split_file_sha256": digest, "captions": "split file sentences[].raw",
              "tags": dict(sorted(Counter(e["split"] for e in entries).items()))}
    return KarpathySplit(records=records, report=report, source=source)


def _check_flickr_entry(path: Path, i: int, entry: object) -> None:
    """An entry of dataset_flickr30k.json / dataset_flickr8k.json: no cocoid or filepath, an `imgid` instead."""
    if not isinstance(entry, dict):
        raise UserError(f"{path}: images[{i}] is not an object")
    if entry.get("split") not in FLICKR_TAGS:
        raise UserError(f"{path}: images[{i}]: split {entry.get('split')!r:.40} is not one of "
                        f"{', '.join(FLICKR_TAGS)}")
    if not valid_id(entry.get("imgid")):
        raise UserError(f"{path}: images[{i}]: imgid {entry.get('imgid')!r:.40} is not a whole number")
    for name, kind in (("filename", str), ("sentences", list)):
        if not isinstance(entry.get(name), kind):
            raise UserError(f"{path}: images[{i}]: {name} is missing or not a {kind.__name__}")


def load_flickr(split_file: str | Path, image_root: str | Path, split: str) -> KarpathySplit:
    """Karpathy's Flickr30k or Flickr8k split file (`dataset_flickr30k.json`: train 29,000, val 1,014, test 1,000
    images with 5 captions each): the images tagged `split`, sorted by the file's `imgid` (their sample keys), from
    `image_root/<filename>` (`flickr30k-images/`), captions from `sentences[].raw`."""
    if split not in FLICKR_TAGS:
        raise UserError(f"unknown split {split!r} for a Flickr split file; expected one of {', '.join(FLICKR_TAGS)}")
    path = split_file if "://" in str(split_file) else Path(split_file)
    entries, digest = _read_images(path)
    seen: dict[int, int] = {}
    for i, entry in enumerate(entries):
        _check_flickr_entry(path, i, entry)
        if entry["imgid"] in seen:
            raise UserError(f"{path}: images[{i}]: imgid {entry['imgid']} is also images[{seen[entry['imgid']]}]; "
                            "every image needs its own id")
        seen[entry["imgid"]] = i
    root = as_root(image_root)
    check_root(root, "--image-root")
    report = CaptionReport()
    records = []
    for entry in sorted((e for e in entries if e["split"] == split), key=lambda e: e["imgid"]):
        name = relative_name(entry["filename"], root)
        if name is None:
            report.problems["unsafe_file_name"].append(printable(entry["filename"][:200]))
            continue
        caps = _captions(entry, report)
        if not caps:
            report.problems["no_captions"].append(name)
            continue
        records.append(ImageRecord(image_id=entry["imgid"], file_name=name, path=under(root, name), captions=caps))
    name = _file_name(path)
    source = {"dataset": name.rsplit(".", 1)[0].removeprefix("dataset_"), "split": split, "split_file": name,
              "split_file_sha256": digest, "captions": "split file sentences[].raw",
              "ids": "split file imgid", "tags": dict(sorted(Counter(e["split"] for e in entries).items()))}
    return KarpathySplit(records=records, report=report, source=source)


def _tokens(text: str) -> list[str]:
    return "".join(c if c.isalnum() else " " for c in text.lower()).split()


def write_karpathy_file(coco_root: str | Path, out: str | Path, *, val: int, test: int) -> Path:
    """Write a split file in `dataset_coco.json`'s format for a COCO-2014-layout folder (the synthetic sample): the
    train2014 images tagged `train`; of val2014's, in id order, the first `val` tagged `val`, the next `test` `test`
    and the rest `restval`, as Karpathy split val2014 (5,000 + 5,000 + 30,504). Captions are the annotations' raw
    text. For tests and the docs; the real file comes with `caption_datasets.zip`."""
    images: list[dict] = []
    sentid = 0
    for coco_split, folder in (("val", "val2014"), ("train", "train2014")):
        records, _ = load_split(find_split(coco_root, coco_split))
        raw = _raw_captions(find_split(coco_root, coco_split).annotations)
        if coco_split == "val" and val + test > len(records):
            raise ValueError(f"val + test = {val + test} is more than the {len(records)} val2014 images")
        for rank, rec in enumerate(records):
            tag = "train" if coco_split == "train" else "val" if rank < val else "test" if rank < val + test \
                else "restval"
            sentences = [{"tokens": _tokens(t), "raw": t, "imgid": len(images), "sentid": sentid + j}
                         for j, t in enumerate(raw[rec.image_id])]
            images.append({"filepath": folder, "sentids": [s["sentid"] for s in sentences], "filename": rec.file_name,
                           "imgid": len(images), "split": tag, "sentences": sentences, "cocoid": rec.image_id})
            sentid += len(sentences)
    out = Path(out)
    out.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return out


def _raw_captions(annotations: Path) -> dict[int, list[str]]:
    """Image id → its captions as the annotations file has them (unclean, in annotation id order)."""
    data = json.loads(annotations.read_text(encoding="utf-8"))
    by_image: dict[int, list[tuple[int, str]]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append((ann["id"], ann["caption"]))
    return {image_id: [text for _, text in sorted(caps)] for image_id, caps in by_image.items()}


def _check_flickr(cfg) -> None:
    if cfg.split not in FLICKR_TAGS:
        raise ValueError(f"split must be one of {', '.join(FLICKR_TAGS)} with a Flickr split file, got {cfg.split!r}")


def _flickr_split(cfg) -> str:
    """`dataset_flickr30k.json` → `flickr30k_<split>`."""
    stem = _file_name(cfg.karpathy).rsplit(".", 1)[0]
    name = stem[len("dataset_"):] if stem.startswith("dataset_") else stem
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in name).lstrip("_-") or "karpathy"
    return f"{name}_{cfg.split}"


def _load_flickr(cfg) -> Loaded:
    kp = load_flickr(cfg.karpathy, cfg.image_root, cfg.split)
    return Loaded(kp.records, kp.report, kp.source, cfg.karpathy, str(cfg.image_root), "karpathy",
                  str(cfg.karpathy), [cfg.karpathy])


def _check_coco(cfg) -> None:
    if cfg.split not in KARPATHY_SPLITS:
        raise ValueError(f"split must be one of {', '.join(KARPATHY_SPLITS)} with a Karpathy split file, "
                         f"got {cfg.split!r}")


def _load_coco(cfg) -> Loaded:
    if "://" in str(cfg.coco_root):
        raise UserError("--karpathy with a --coco-root URL is not supported; use a local copy of the 2014 "
                        "folders, or build val/train from the URL")
    kp = load_karpathy(cfg.karpathy, cfg.coco_root, cfg.split)
    folders = sorted({str(r.path.parent) for r in kp.records})
    return Loaded(kp.records, kp.report, kp.source, cfg.karpathy, " and ".join(folders) or "-", "coco-karpathy",
                  str(cfg.coco_root), [cfg.karpathy])


SPECS = [
    # `--karpathy dataset_flickr30k.json --image-root DIR --split train|val|test`: shards flickr30k_<split>-*.tar
    InputSpec("flickr", ("karpathy", "image_root"), _check_flickr, _flickr_split, _load_flickr),
    # `--coco-root DIR --karpathy dataset_coco.json --split ...`: shards karpathy_<split>-*.tar
    InputSpec("coco-karpathy", ("coco_root", "karpathy"), _check_coco,
              lambda cfg: "karpathy_" + cfg.split.replace("+", "_"), _load_coco),
]
