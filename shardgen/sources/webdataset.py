"""Existing webdataset shards as input (img2dataset's output: `<key>.jpg` + `<key>.txt` [+ `<key>.json`] per sample,
local or at URLs), read into the same sorted `CocoImage` list as `coco.load_split`, so a CC3M-style download is
re-sharded into our format with precomputed caption embeddings.

`--webdataset 'dir/{00000..00099}.tar'` (a brace pattern, as webdataset and img2dataset write them, or several
patterns separated by spaces) is listed once, each tar read front to back with the stdlib's streaming reader: a
sample's image is recorded by where it lies (`roots.TarMember`: the tar's URL, offset and size) and read in place
when the build preprocesses it, so nothing is extracted. The caption is the sample's `.txt` (img2dataset writes the
caption there and in `.json`'s `caption`). Sample keys that are all whole numbers (img2dataset's `000000123`) are
the image ids; otherwise the ids are the samples' ranks in listing order. A sample without an image
(`missing_file`) or a caption (`no_captions`, `empty_caption`) is counted; a tar that cannot be read is one line.
"""

from __future__ import annotations

import tarfile
from typing import Any, NamedTuple

from ..errors import UserError
from ..format.storage import redact
from .coco import CaptionReport, CocoImage, clean_caption, valid_id
from .roots import TarMember, open_input

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class WebdatasetInput(NamedTuple):
    records: list[CocoImage]
    report: CaptionReport
    source: dict[str, Any]


class _Sample(NamedTuple):
    url: str
    key: str
    image: TarMember | None
    image_name: str
    caption: str | None


def expand(urls: str) -> list[str]:
    """The tar URLs a `--webdataset` value names: brace patterns expanded, in order."""
    from braceexpand import braceexpand

    found = [url for pattern in urls.split() for url in braceexpand(pattern)]
    if not found:
        raise UserError("--webdataset names no tar files")
    return found


def _iter_samples(url: str) -> list[_Sample]:
    """One tar's samples in member order: key → image location and caption text."""
    samples: dict[str, dict[str, Any]] = {}
    try:
        with open_input(url, "webdataset shard") as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                key, _, ext = base.partition(".")
                entry = samples.setdefault(f"{member.name[:len(member.name) - len(base)]}{key}", {})
                if ext.lower() in IMAGE_EXTENSIONS and "image" not in entry:
                    entry["image"] = TarMember(str(url), member.offset_data, member.size)
                    entry["image_name"] = base
                elif ext.lower() == "txt":
                    entry["caption"] = tar.extractfile(member).read().decode("utf-8", "replace")
    except tarfile.TarError as exc:
        raise UserError(f"{redact(str(url))}: not a readable tar ({exc})") from None
    return [_Sample(url, key, e.get("image"), e.get("image_name", f"{key}.jpg"), e.get("caption"))
            for key, e in samples.items()]


def load_webdataset(urls: str) -> WebdatasetInput:
    """Every sample of the shards `urls` names with an image and a caption, sorted by id."""
    tars = expand(urls)
    samples = [s for url in tars for s in _iter_samples(url)]
    numeric = [int(s.key) if s.key.isdigit() else None for s in samples]
    by_key = all(valid_id(n) for n in numeric) and len(set(numeric)) == len(numeric)
    report = CaptionReport()
    records = []
    for rank, sample in enumerate(samples):
        caption = clean_caption(sample.caption) if sample.caption is not None else None
        if sample.image is None:
            report.problems["missing_file"].append(sample.image_name)
        elif caption is None:
            report.problems["no_captions"].append(sample.image_name)
        elif not caption:
            report.problems["empty_caption"].append(sample.image_name)
        else:
            records.append(CocoImage(image_id=numeric[rank] if by_key else rank, file_name=sample.image_name,
                                     path=sample.image, captions=(caption,)))
    records.sort(key=lambda r: r.image_id)
    source = {"dataset": "webdataset", "shards": len(tars), "samples": len(samples),
              "first": redact(tars[0]).rsplit("/", 1)[-1], "ids": "sample keys" if by_key else "listing rank"}
    return WebdatasetInput(records=records, report=report, source=source)
