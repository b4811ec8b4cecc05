"""The record every source reads its input into: one image, by its id (the sample key), its file name, where its
bytes lie and its captions. A COCO annotation, a Karpathy or Flickr entry, a table's rows and a webdataset sample
all become one; the build is a pure function of the sorted records (`listing.Listing` holds them in columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .roots import TarMember


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    file_name: str
    path: Path | str | TarMember  # a local file, a URL (s3://...) read through fsspec, or a member of a tar
    captions: tuple[str, ...]
