"""Where shards live: local paths and any fsspec URL (s3://, gs://, https://, file://) behind one small API.

Both the writer side (`verify`, `upload`) and the reader side (`loaders`) open shards through these functions,
so a remote prefix behaves exactly like a local folder.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import fsspec


def is_remote(url: str) -> bool:
    scheme = urlparse(str(url)).scheme
    return len(scheme) > 1 and scheme != "file"  # a drive letter ("c:") is not a scheme


def join(base: str, name: str) -> str:
    base = str(base)
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return os.path.join(base, name)


def open_url(url: str, mode: str = "rb", **storage_options):
    """Open a local path or fsspec URL; the caller closes it. Errors name the URL."""
    try:
        return fsspec.open(str(url), mode, **storage_options).open()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{url}: not found") from exc


def read_text(url: str, **storage_options) -> str:
    with open_url(url, "rb", **storage_options) as fh:
        return fh.read().decode("utf-8")


def read_bytes(url: str, **storage_options) -> bytes:
    with open_url(url, "rb", **storage_options) as fh:
        return fh.read()
