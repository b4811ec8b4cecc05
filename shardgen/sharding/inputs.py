"""What a build reads, made ready for tasks that run elsewhere: the input's records (`load_input`, one source per
kind of input), the input's provenance for the manifest, and the settings' paths made absolute on the driver
(`absolute_paths`), since tasks run in other processes and on other nodes with other working directories.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from ..config import BuildConfig
from ..errors import UserError
from ..format.coco_folders import SPLIT_FOLDERS, find_split
from ..format.storage import IMAGE_MAX_BYTES, is_remote, read_bytes, redact
from ..sources.coco import CaptionReport, CocoImage, find_remote_split, load_split
from ..sources.karpathy import load_flickr, load_karpathy
from ..sources.table import load_table
from ..sources.webdataset import check_output_apart, load_webdataset

INDEX_FILE_MAX_BYTES = 4 << 30  # an index file hashed for the manifest is read through the storage layer's cap


class SplitInput(NamedTuple):
    """What a build reads: the split's images and captions, what was skipped, and where they came from."""

    records: list[CocoImage]
    report: CaptionReport
    source: dict[str, Any] | None  # the manifest's `source`; None for COCO 2014's own train/val (as always)
    captions_file: Path | str
    images: str  # the image folder(s), for the log
    provenance: dict[str, Any]  # the manifest's `provenance.input`: kind, location as given, index files' sha256


def _provenance(kind: str, location: str, index_files: list[str]) -> dict[str, Any]:
    return {"kind": kind, "location": redact(location),
            "index_files": {redact(str(f)).rsplit("/", 1)[-1]: _sha256(f) for f in index_files}}


def _sha256(location: Path | str) -> str:
    if is_remote(str(location)):
        return hashlib.sha256(read_bytes(str(location), max_bytes=INDEX_FILE_MAX_BYTES)).hexdigest()
    h = hashlib.sha256()
    with open(location, "rb") as fh:  # the source has read this very file already (the checked opener)
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def load_input(cfg: BuildConfig) -> SplitInput:
    """The split's images, sorted by id: a COCO split (2014 or 2017) from its captions file (a folder or a URL), a
    Karpathy split from its split file with the images from the 2014 folders, a Flickr split file's images under
    --image-root, an image-caption table's, or webdataset tars'. Raises UserError on bad input."""
    if cfg.webdataset is not None:
        check_output_apart(cfg.webdataset, cfg.out)  # a re-shard in place would replace its own input
        wds = load_webdataset(cfg.webdataset)
        listing = "\n".join(sorted({str(r.path.url) for r in wds.records})).encode()
        prov = {"kind": "webdataset", "location": redact(cfg.webdataset),
                "index_files": {"tar list": hashlib.sha256(listing).hexdigest()}}
        return SplitInput(wds.records, wds.report, wds.source, cfg.webdataset, cfg.webdataset, prov)
    if cfg.captions is not None:
        table = load_table(cfg.captions, cfg.image_root, cfg.split, image_column=cfg.image_column,
                           caption_column=cfg.caption_column, id_column=cfg.id_column, split_column=cfg.split_column)
        return SplitInput(table.records, table.report, table.source, cfg.captions, str(cfg.image_root),
                          _provenance("table", str(cfg.captions), [cfg.captions]))
    if cfg.image_root is not None:
        kp = load_flickr(cfg.karpathy, cfg.image_root, cfg.split)
        return SplitInput(kp.records, kp.report, kp.source, cfg.karpathy, str(cfg.image_root),
                          _provenance("karpathy", str(cfg.karpathy), [cfg.karpathy]))
    if is_remote(str(cfg.coco_root)):
        if cfg.karpathy is not None:
            raise UserError("--karpathy with a --coco-root URL is not supported; use a local copy of the 2014 "
                            "folders, or build val/train from the URL")
        layout = find_remote_split(str(cfg.coco_root).rstrip("/"), cfg.split)
        records, report = load_split(layout)
        return SplitInput(records, report, _coco_source(cfg.split, layout), layout.annotations,
                          str(layout.images_dir), _provenance("coco", str(cfg.coco_root), [layout.annotations]))
    if cfg.karpathy is not None:
        kp = load_karpathy(cfg.karpathy, cfg.coco_root, cfg.split)
        folders = sorted({str(r.path.parent) for r in kp.records})
        return SplitInput(kp.records, kp.report, kp.source, cfg.karpathy, " and ".join(folders) or "-",
                          _provenance("coco-karpathy", str(cfg.coco_root), [cfg.karpathy]))
    layout = find_split(cfg.coco_root, cfg.split)
    records, report = load_split(layout)
    return SplitInput(records, report, _coco_source(cfg.split, layout), layout.annotations, str(layout.images_dir),
                      _provenance("coco", str(cfg.coco_root), [layout.annotations]))


def _coco_source(split: str, layout) -> dict[str, Any] | None:
    """The manifest's `source` of a COCO split: None for 2014's own train/val (as always), else year and file."""
    year = SPLIT_FOLDERS[split][-4:]
    return None if year == "2014" else {"dataset": f"coco{year}", "split": split,
                                        "captions": str(layout.annotations).rsplit("/", 1)[-1]}


def _absolute(value: Path | str | None) -> Path | str | None:
    if value is None or "://" in str(value):
        return value
    path = Path(os.path.abspath(Path(value).expanduser()))
    return path if isinstance(value, Path) else str(path)


def absolute_paths(cfg: BuildConfig) -> BuildConfig:
    """`cfg` with every local path absolute (against this process's working directory), so a task on another
    process or node reads the same files; the text encoder too when it names a local folder. URLs and hub ids
    stay as they are."""
    encoder = cfg.text_encoder
    if Path(encoder).expanduser().is_dir():
        encoder = os.path.abspath(Path(encoder).expanduser())
    webdataset = cfg.webdataset
    if webdataset is not None and not is_remote(webdataset) and not webdataset.startswith(("/", "~")):
        webdataset = os.path.join(os.getcwd(), webdataset)
    return replace(cfg, coco_root=_absolute(cfg.coco_root), image_root=_absolute(cfg.image_root),
                   karpathy=_absolute(cfg.karpathy), captions=_absolute(cfg.captions), out=_absolute(cfg.out),
                   embeddings_cache=_absolute(cfg.embeddings_cache), staging=_absolute(cfg.staging),
                   text_encoder=encoder, webdataset=webdataset)
