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

import numpy as np

from ..config import BuildConfig
from ..format.digest import file_digests
from ..format.storage import is_remote, read_bytes, redact
from ..sources.coco import CaptionReport
from ..sources.listing import Listing

INDEX_FILE_MAX_BYTES = 4 << 30  # an index file hashed for the manifest is read through the storage layer's cap


class SplitInput(NamedTuple):
    """What a build reads: the split's images and captions, what was skipped, and where they came from."""

    records: Listing  # the images, sorted by id, in columns
    report: CaptionReport
    source: dict[str, Any] | None  # the manifest's `source`; None for COCO 2014's own train/val (as always)
    captions_file: Path | str
    images: str  # the image folder(s), for the log
    provenance: dict[str, Any]  # the manifest's `provenance.input`: kind, location as given, index files' sha256


def _sha256(location: Path | str) -> str:
    if is_remote(str(location)):
        return hashlib.sha256(read_bytes(str(location), max_bytes=INDEX_FILE_MAX_BYTES)).hexdigest()
    return file_digests(location, "sha256")[0]  # the source has read this very file already (the checked opener)


def load_input(cfg: BuildConfig) -> SplitInput:
    """The input's images, sorted by id, as its kind reads them (`sources.inputs`), with its provenance. Raises
    UserError on bad input."""
    got = cfg.input_kind().load(cfg)
    if got.tar_list is not None:  # a webdataset input: its tars, as one listing
        listing = "\n".join(got.tar_list).encode()
        files = {"tar list": hashlib.sha256(listing).hexdigest()}
    else:
        files = {redact(str(f)).rsplit("/", 1)[-1]: _sha256(f) for f in got.index_files}
    provenance = {"kind": got.kind, "location": redact(got.location), "index_files": files}
    records = got.records if isinstance(got.records, Listing) else Listing.from_records(got.records)
    if len(records) > 1 and not bool(np.all(np.diff(records.image_id) > 0)):  # the contract every source keeps
        raise ValueError(f"the {got.kind} input listed its images out of id order or one id twice: a bug in its "
                         "source (sources/inputs.py: records sorted by id, one image per id)")
    return SplitInput(records, got.report, got.source, got.captions_file, got.images, provenance)


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
    extra = {k: _absolute(v) if isinstance(v, Path) else v for k, v in cfg.source_options.items()}
    return replace(cfg, source_options=extra, coco_root=_absolute(cfg.coco_root), image_root=_absolute(cfg.image_root),
                   karpathy=_absolute(cfg.karpathy), captions=_absolute(cfg.captions), out=_absolute(cfg.out),
                   embeddings_cache=_absolute(cfg.embeddings_cache), staging=_absolute(cfg.staging),
                   text_encoder=encoder, webdataset=webdataset)
