"""Where a build's input files lie: a local folder, or an fsspec URL (`s3://bucket/coco`, `https://host/x`).

Sources name every image by its root and a relative name (`under`), read their index files (annotations, split
files, tables) through `open_input`, and check a root before any work (`check_root`): a bucket that does not exist
or refuses our credentials is one line naming the URL (exit 2), not a traceback half-way into the build. Local
paths stay `Path`s and are read as they always were; only URLs go through fsspec (with the storage layer's
timeouts), so a local build's bytes and speed do not change.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, NamedTuple, TypeVar
from urllib.parse import unquote

from ..errors import UserError
from ..format.storage import (
    IMAGE_MAX_BYTES,
    INPUT_MAX_BYTES,
    READ_TRIES,
    RETRY_BACKOFF_S,
    RefusedFile,
    access_error,
    client_errors,
    is_remote,
    open_local,
    open_url,
    read_bytes,
    read_local,
    redact,
    with_timeouts,
)


def as_root(root: str | os.PathLike) -> Path | str:
    """A local root as a `Path`, a URL as a string without its trailing slash (`Path` would fold `s3://` into
    `s3:/`)."""
    text = str(root)
    return text.rstrip("/") if is_remote(text) else Path(root)


# A name of these characters alone needs no decoding, has no drive, backslash or escape: only its segments are
# looked at (the rest of `relative_name` costs ~40 µs, per image and per source)
_PLAIN = re.compile(r"[A-Za-z0-9_.+=,~@ /-]+")


def relative_name(name: object, root: Path | str | None = None) -> str | None:
    """The one name of an image file under `root`, as every source keys and joins it, or None when `name` could
    point outside the root (counted `unsafe_file_name` by the caller). Every source checks names here, once:

    - segments are normalized, so `a.jpg`, `./a.jpg`, `a.jpg/` and `.//a.jpg` are one file (`sub//a.jpg` is
      `sub/a.jpg`), not several samples of one image;
    - a `..` segment, an absolute path or a drive (POSIX or Windows), a NUL or a lone surrogate is refused; under a
      URL root, so is any that percent-decoding spells (`%2e%2e/x.jpg`: the server decodes it to `../x.jpg`);
    - an absolute path (a URL under a URL root) that lies inside `root` is made relative to it; one outside it is
      refused.
    """
    if isinstance(name, str) and _PLAIN.fullmatch(name) and name.strip() and not name.startswith("/"):  # fast
        parts = [part for part in name.split("/") if part not in ("", ".")]
        return None if ".." in parts else ("/".join(parts) or None)
    if not isinstance(name, str) or not name.strip() or "\x00" in name or not _encodable(name):
        return None
    remote = isinstance(root, str) and is_remote(root)
    if root is not None and (PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor
                             or (remote and "://" in name)):
        name = _inside(name, root)
        if name is None:
            return None
    spellings = [name]
    while remote and len(spellings) < 4 and unquote(spellings[-1]) != spellings[-1]:
        spellings.append(unquote(spellings[-1]))  # what the server reads (a name encoded twice decodes twice)
    for spelling in spellings:
        if "\x00" in spelling:
            return None
        for pure in (PurePosixPath(spelling), PureWindowsPath(spelling)):
            if pure.is_absolute() or pure.anchor or ".." in pure.parts:
                return None
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return "/".join(parts) or None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")  # a lone surrogate (JSON's `\\ud800`) names no file any file system takes
    except UnicodeEncodeError:
        return False
    return True


def _inside(name: str, root: Path | str) -> str | None:
    """An absolute `name` as a path relative to `root`, or None when it lies outside it. Local: compared as
    written (both made absolute and `..`-free), then with symlinks resolved (a root reached through a link)."""
    if isinstance(root, str) and is_remote(root):
        base = root.rstrip("/") + "/"
        return name[len(base):] if name.startswith(base) else None
    if not PurePosixPath(name).is_absolute():  # a Windows drive path on POSIX: never inside a POSIX root
        return None
    for path, base in ((os.path.normpath(name), os.path.abspath(root)),
                       (os.path.realpath(name), os.path.realpath(root))):
        if os.path.commonpath([path, base]) == base and path != base:
            return os.path.relpath(path, base).replace(os.sep, "/")
    return None


def under(root: Path | str, name: str) -> Path | str:
    """`name` (a name `relative_name` gave) inside `root`: a `Path` for a folder, a URL for a URL."""
    if relative_name(name) != name:
        raise ValueError(f"under: {name!r} is not a checked relative name (see relative_name)")
    if isinstance(root, Path):
        return root / name
    return f"{str(root).rstrip('/')}/{name}"


def open_input(path: str | os.PathLike, what: str, *, max_bytes: int | None = INPUT_MAX_BYTES) -> IO[bytes]:
    """Open an input file (annotations, split file, table, tar) for reading; `UserError` naming it when it cannot
    be. A local file through the checked opener (`open_local`: a regular file, not a FIFO that would block or a
    device without end, of at most `max_bytes`); a URL read stops with a `UserError` once more than `max_bytes`
    came. `None`: no cap (a tar, which is streamed, never held). The caller closes it."""
    try:
        if is_remote(str(path)):
            fh = open_url(str(path), "rb")
            if max_bytes is None:
                return fh
            if fh.seekable():  # S3 & co. know the size (and parquet seeks): checked before a byte is read
                size = getattr(fh, "size", None)
                if size is not None and size > max_bytes:
                    fh.close()
                    raise UserError(f"{redact(str(path))}: {what} holds {size} bytes, more than the {max_bytes} an "
                                    "input file may")
                return fh
            return io.BufferedReader(_Capped(fh, str(path), what, max_bytes))
        return open_local(path, max_bytes=max_bytes)
    except FileNotFoundError:
        raise UserError(f"{redact(str(path))}: {what} not found") from None
    except RefusedFile as exc:
        raise UserError(f"{what} {exc}") from None
    except client_errors() as exc:  # credentials, a missing bucket, an unreachable endpoint: the user's to fix
        error = exc if isinstance(exc, OSError) else OSError(str(exc))
        raise access_error(str(path), error) from None


T = TypeVar("T")


def read_input(path: str | os.PathLike, what: str, parse: Callable[[IO[bytes]], T], *,
               max_bytes: int | None = INPUT_MAX_BYTES, sleep: Callable[[float], None] = time.sleep) -> T:
    """`parse` applied to the input file at `path` (opened by `open_input`). A remote read that fails for network
    reasons (a connection cut mid-body, a server that stalls past the read timeout) is tried again from the start,
    `READ_TRIES` times in all, as the build's image reads are; then, or for any such failure of a local file, one
    line naming the file (`UserError`), never a traceback."""
    for attempt in range(1, READ_TRIES + 1):
        try:
            with open_input(path, what, max_bytes=max_bytes) as fh:
                return parse(fh)
        except client_errors() as exc:
            if not is_remote(str(path)) or attempt == READ_TRIES:
                error = exc if isinstance(exc, OSError) else OSError(str(exc))
                tries = f" (tried {attempt} times)" if attempt > 1 else ""
                raise UserError(f"{access_error(str(path), error)}{tries}") from None
            sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


class _Capped(io.RawIOBase):
    """A remote input's body, refused (`UserError`) once more than `max_bytes` came: a read timeout never fires
    while bytes keep coming."""

    def __init__(self, fh: IO[bytes], url: str, what: str, max_bytes: int) -> None:
        super().__init__()
        self._fh, self._url, self._what, self._max, self._left = fh, url, what, max_bytes, max_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._fh.read(min(len(view), self._left + 1))
        if len(data) > self._left:
            raise UserError(f"{redact(self._url)}: {self._what} holds more than the {self._max} bytes an input file "
                            "may; refusing to read further")
        self._left -= len(data)
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


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
    server reads front to back (HTTP), by reading up to it. A member larger than an image file may be
    (`IMAGE_MAX_BYTES`, whatever its header claims) is `RefusedFile("too_large")` before a byte is read; otherwise
    raises what the storage layer raises."""
    if member.size > IMAGE_MAX_BYTES:
        raise RefusedFile("too_large", f"{member}: {member.size} bytes, more than the {IMAGE_MAX_BYTES} allowed")
    if not is_remote(member.url):
        with open_local(member.url) as fh:
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


def stored_location(path: Path | str | TarMember) -> tuple[str, tuple[int, int] | None]:
    """How a listing keeps where an image's bytes are (`listing.Listing`): the place as text, and for a member of
    a tar its (offset, size)."""
    if isinstance(path, TarMember):
        return path.url, (path.offset, path.size)
    return str(path), None


def image_location(place: str, member: tuple[int, int] | None = None) -> Path | str | TarMember:
    """The location `stored_location` kept, as a record holds it: a tar member, a URL (text), a local `Path`."""
    if member is not None:
        return TarMember(place, *member)
    return place if "://" in place else Path(place)


def image_reader(path: Path | str | TarMember, *, root: Path | str | None = None,
                 max_bytes: int = IMAGE_MAX_BYTES) -> tuple[bool, Callable[[], bytes]]:
    """How an image record's bytes are read, wherever its source put them: (whether they are a file of this
    machine, a function that reads them). A local file through the checked opener (a regular file inside `root`,
    at most `max_bytes`), a tar member in place (`read_member`), a URL through fsspec with the same cap. The
    function raises what the storage layer raises; the build counts or retries it (`sharding.images`)."""
    if isinstance(path, TarMember):
        return False, lambda: read_member(path)
    if not is_remote(str(path)):
        return True, lambda: read_local(path, root=root, max_bytes=max_bytes)
    return False, lambda: read_bytes(str(path), max_bytes=max_bytes)


def _skip(fh, n: int) -> None:
    while n > 0:
        block = fh.read(min(n, 1 << 20))
        if not block:
            return
        n -= len(block)
