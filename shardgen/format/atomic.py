"""Files written atomically and without following links: every write site of shardgen, loaders and models goes
through here. A file is written under a temporary name of its own, then renamed over its destination, so a reader
sees the old file or the new one, never half of one; whatever happens, nothing temporary is left behind.

The temporary name is unique (pid and random bytes) and created with `O_CREAT | O_EXCL | O_NOFOLLOW`: a link planted
at a predictable name (`params.json.tmp`) cannot make a tool write outside its folder, and two writers never share
a temporary file. The rename replaces a link at the destination itself, not the file it points to. `open_append`
opens a log (`train.log`) the same way: a link there is refused. A refused write (a full disk, a read-only folder)
is an `OSError` naming the file; `errors.report` turns those of `errors.USER_ERRNOS` into one line and exit 2.

Torch archives (the caption cache, checkpoints) are written into a staging folder made for the one write
(`mkdtemp`: new, private), because torch names the archive's records after the file's name (`<name>.tmp`, so the
bytes are reproducible).

torch reports a failed write (a full disk) as a bare `RuntimeError` from its archive writer; when the disk has less
room than the object needs, that is raised as `OSError(ENOSPC)` naming the file, which callers turn into one line.
torch is imported by the function, not the module: the format layer imports no torch.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import UserError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # not on Windows, where O_EXCL alone refuses an existing name
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside `path`: hidden, unique to this process and call (`.<name>.<pid>.<hex>.tmp`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def create_new(path: Path, *, mode: int = 0o666) -> int:
    """A file descriptor of a new file at `path`, opened for writing; refuses (FileExistsError, ELOOP) when
    anything, a link included, is already there."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)


@contextmanager
def open_atomic(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into; on leaving the block it is flushed to disk and renamed
    over `path`. On an exception nothing changes at `path` and the temporary file is removed."""
    path = Path(path)
    tmp = temp_path(path)
    fd = create_new(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                if exc.filename is None:  # a failed write() names no file: say which one
                    exc.filename = str(path)
                raise
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """`path` holds `data`, atomically (see the module)."""
    with open_atomic(path) as fh:
        fh.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    """`path` holds `text` (UTF-8), atomically (see the module)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def open_fresh(path: Path) -> BinaryIO:
    """`path` opened to write from its first byte, not atomically (a file streamed out, too big to stage twice):
    whatever is there is removed first (a link itself, not what it points to), and the new file is created
    exclusively, so a link planted meanwhile is refused."""
    Path(path).unlink(missing_ok=True)
    return os.fdopen(create_new(path), "wb")


def open_append(path: Path) -> BinaryIO:
    """`path` opened to append (created if missing). Raises UserError when `path` is a link (it may point out of
    the folder)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UserError(f"{path}: is a link; refusing to write through it (remove it, or choose another "
                        "folder)") from None
    return os.fdopen(fd, "ab")


def link_atomic(source: Path, dest: Path) -> None:
    """`dest` becomes a hard link to `source` (a copy where the file system has no hard links), atomically."""
    dest = Path(dest)
    tmp = temp_path(dest)
    try:
        try:
            os.link(source, tmp)  # a new name: fails if anything is there, and never follows a link at `tmp`
        except OSError:  # a file system without hard links
            with open(source, "rb") as src, os.fdopen(create_new(tmp), "wb") as fh:
                shutil.copyfileobj(src, fh)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in `obj` (nested dicts, lists and tuples): about what its archive needs on disk."""
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    numel, size = getattr(obj, "numel", None), getattr(obj, "element_size", None)
    return numel() * size() if callable(numel) and callable(size) else 0


def save_torch_atomic(obj, path: Path, *, needed_bytes: int | None = None) -> Path:
    """`torch.save(obj)` to `path` atomically. The temporary file keeps the name `<name>.tmp` (torch names the
    archive's records after it, so the bytes are reproducible) in a new folder of this write's own. Raises
    OSError(ENOSPC) naming `path` when the write fails for want of room (`needed_bytes`: default, the tensors')."""
    import torch

    path = Path(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    tmp = staging / f"{path.name}.tmp"
    try:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's archive writer reports a failed write (a full disk) this way
            needed = tensor_bytes(obj) if needed_bytes is None else needed_bytes
            if shutil.disk_usage(staging).free >= needed:
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        staging.rmdir()
    return path
