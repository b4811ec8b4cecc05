"""Where shards live: local paths and any fsspec URL (s3://, gs://, https://, file://) behind one small API.

Both the writer side (`verify`, `upload`) and the reader side (`loaders`) open shards through these functions,
so a remote prefix behaves exactly like a local folder.
"""

from __future__ import annotations

import os
import socket
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


def reachable(url: str, *, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to `url`'s host and port opens within `timeout` s: a quick probe before a client
    that would retry for a long time against a host that cannot be reached (offline machines)."""
    parts = urlparse(url)
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
