"""The build's output folder: what is checked before any work, the exclusive lock held while building, and the
write failures (full disk, read-only folder) that are the user's to fix rather than bugs.

Everything here runs before captions are encoded, so a folder that cannot be used costs seconds, not the minutes
of encoding. The lock is `flock` on `.shardgen-build.lock` inside the folder, holding the owner's pid and host: a
second build into the same folder stops at once with one line naming the holder, instead of two processes
interleaving shards. The kernel drops the lock when its process dies, so a killed build never leaves it stuck.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import UserError
from ..format import MANIFEST_NAME, USER_ERRNOS

try:
    import fcntl
except ImportError:  # Windows: no flock; builds there are not guarded against a second writer
    fcntl = None

LOCK_NAME = ".shardgen-build.lock"


def check_out_dir(out: Path, split: str) -> None:
    """Refuse an --out that is a file, or a folder holding another split's (or an unreadable) manifest."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    manifest = out / MANIFEST_NAME
    if not manifest.is_file():
        return
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        data = exc
    if not isinstance(data, dict):
        raise UserError(f"{manifest} is not a shardgen manifest; delete it (the build writes a new one) or use "
                        "another --out")
    if data.get("split") != split:
        raise UserError(f"{out} already holds the {data.get('split')!r} split; use one --out per split "
                        f"(e.g. shards/{split})")


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return text or "another process"


def _open_lock(path: Path, busy: Callable[[str], str]) -> int:
    """The lock file's descriptor, locked; retried when the holder removed the file while we waited for it.
    Held elsewhere: `UserError(busy(who holds it))`."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(busy(_holder(path))) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # we locked a file its holder has just unlinked: take the new one


@contextmanager
def _held(path: Path, busy: Callable[[str], str]) -> Iterator[None]:
    """Hold the lock file `path` (naming this process in it) until the block ends."""
    fd = None
    if fcntl is not None:
        fd = _open_lock(path, busy)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    try:
        yield
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # while still holding it, so no one locks a stale file
            os.close(fd)


@contextmanager
def locked_out_dir(out: Path) -> Iterator[None]:
    """Create `out` if needed and hold its build lock; a folder this call created is removed again if the build
    leaves it empty (e.g. the text encoder failed to load)."""
    created = not out.exists()
    lock = out / LOCK_NAME
    try:
        with ExitStack() as stack:
            with user_write_errors(out):
                out.mkdir(parents=True, exist_ok=True)
                stack.enter_context(_held(lock, lambda who: f"{out} is being built by {who}; wait for it to finish "
                                                            f"or use another --out (if no build is running, delete "
                                                            f"{lock})"))
            yield
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


@contextmanager
def locked_cache(cache: Path) -> Iterator[None]:
    """Hold the caption cache `cache` for this build (`<cache>.lock`): a second build naming the same
    `--embeddings-cache` would rewrite the files this one's tasks read."""
    lock = cache.with_name(cache.name + ".lock")
    with ExitStack() as stack:
        with user_write_errors(cache.parent, only_under=True):
            cache.parent.mkdir(parents=True, exist_ok=True)
            if os.access(cache.parent, os.W_OK):  # a read-only cache is only read: nothing to hold
                stack.enter_context(_held(lock, lambda who: f"the caption cache {cache} is in use by the build of "
                                                            f"{who}; wait for it to finish or give this one another "
                                                            f"--embeddings-cache (if none is running, delete {lock})"))
        yield


@contextmanager
def user_write_errors(out: Path, *, only_under: bool = False) -> Iterator[None]:
    """Turn a full disk or a folder we may not write into a one-line `UserError` naming the file. `only_under`:
    only for files under `out` (the block also reads elsewhere, e.g. a model folder, whose errors are not
    about writing `out`)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise
        if only_under and exc.filename and not Path(exc.filename).resolve().is_relative_to(Path(out).resolve()):
            raise
        where = exc.filename or out
        hint = ("free some space, then rerun the same command to resume" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else "choose a folder you can write with --out")
        raise UserError(f"cannot write {where}: {exc.strerror or exc}; {hint}") from exc
