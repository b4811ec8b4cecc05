"""Where a build's input files lie: a local folder, or an fsspec URL (`s3://bucket/coco`, `https://host/x`).

Sources name every image by its root and a relative name (`under`), read their index files (annotations, split
files, tables) through `open_input`, and check a root before any work (`check_root`): a bucket that does not exist
or refuses our credentials is one line naming the URL (exit 2), not a traceback half-way into the build. Local
paths stay `Path`s and are read as they always were; only URLs go through fsspec (with the storage layer's
timeouts), so a local build's bytes and speed do not change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, NamedTuple

from ..errors import UserError
from ..format.storage import access_error, client_errors, is_remote, open_url, redact, with_timeouts


def as_root(root: str | os.PathLike) -> Path | str:
    """A local root as a `Path`, a URL as a string without its trailing slash (`Path` would fold `s3://` into
    `s3:/`)."""
    text = str(root)
    return text.rstrip("/") if is_remote(text) else Path(root)


def under(root: Path | str, name: str) -> Path | str:
    """`name` (a checked relative path, `a/b.jpg`) inside `root`: a `Path` for a folder, a URL for a URL."""
    if isinstance(root, Path):
        return root / name
    return f"{str(root).rstrip('/')}/{name}"


def open_input(path: str | os.PathLike, what: str) -> IO[bytes]:
    """Open an input file (annotations, split file, table) for reading; `UserError` naming it when it cannot be.
    The caller closes it."""
    try:
        if is_remote(str(path)):
            return open_url(str(path), "rb")
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{redact(str(path))}: {what} not found") from None
    except client_errors() as exc:  # credentials, a missing bucket, an unreachable endpoint: the user's to fix
        error = exc if isinstance(exc, OSError) else OSError(str(exc))
        raise access_error(str(path), error) from None


def check_root(root: Path | str, what: str) -> None:
    """Refuse, before any work, a root that is not a folder (local) or whose bucket or host cannot be listed."""
    if isinstance(root, Path):
        if not root.is_dir():
            raise UserError(f"{what} {str(root)!r} is not a directory")
        return
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(root, **with_timeouts(root))
        found = fs.exists(path)
    except client_errors() as exc:
        raise access_error(root, exc if isinstance(exc, OSError) else OSError(str(exc))) from None
    if not found:
        raise UserError(f"{what} {redact(root)} does not exist (check the bucket and the path)")


def list_folders(root: str, max_depth: int, *, skip: frozenset[str] = frozenset()) -> list[str]:
    """Every folder below a URL root up to `max_depth` levels, as URLs (breadth first, sorted), not descending
    into folders named in `skip` (image folders: huge listings): what `find_split` walks locally."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(root, **with_timeouts(root))
    scheme = root.split("://", 1)[0]
    found, frontier = [], [(path.rstrip("/"), 0)]
    while frontier:
        folder, depth = frontier.pop(0)
        found.append(f"{scheme}://{folder}")
        if depth >= max_depth or folder.rsplit("/", 1)[-1] in skip:
            continue
        try:
            entries = fs.ls(folder, detail=True)
        except FileNotFoundError:
            continue
        frontier += sorted((e["name"].rstrip("/"), depth + 1) for e in entries if e["type"] == "directory")
    return found


class TarMember(NamedTuple):
    """An image stored inside a tar (a webdataset shard, local or a URL): read as `size` bytes at `offset`."""

    url: str
    offset: int
    size: int

    def __str__(self) -> str:  # how messages (a missing or corrupt image) name it
        return f"{redact(self.url)}@{self.offset}"


def read_member(member: TarMember) -> bytes:
    """The bytes of one tar member: a local file by seek and read, a URL by a ranged read (S3) or, where the
    server reads front to back (HTTP), by reading up to it. Raises what the storage layer raises."""
    if not is_remote(member.url):
        with open(member.url, "rb") as fh:
            fh.seek(member.offset)
            data = fh.read(member.size)
    else:
        with open_url(member.url, "rb") as fh:
            if fh.seekable():
                fh.seek(member.offset)
            else:
                _skip(fh, member.offset)
            data = fh.read(member.size)
    if len(data) != member.size:
        raise FileNotFoundError(f"{member}: the tar ends before this member ({len(data)} of {member.size} bytes)")
    return data


def _skip(fh, n: int) -> None:
    while n > 0:
        block = fh.read(min(n, 1 << 20))
        if not block:
            return
        n -= len(block)
