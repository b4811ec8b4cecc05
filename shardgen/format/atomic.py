"""Atomic writes of torch archives (the caption cache, checkpoints): the file is written under a temporary name in a
staging folder of the writing process, then renamed over its destination, so a reader sees the old file or the
new one, never half of one; whatever happens, nothing temporary is left behind.

torch reports a failed write (a full disk) as a bare `RuntimeError` from its archive writer; when the disk has less
room than the object needs, that is raised as `OSError(ENOSPC)` naming the file, which callers turn into one line.
torch is imported by the function, not the module: the format layer imports no torch.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


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
    archive's records after it, so the bytes are reproducible) in a folder of this process's own. Raises
    OSError(ENOSPC) naming `path` when the write fails for want of room (`needed_bytes`: default, the tensors')."""
    import torch

    path = Path(path)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.mkdir(exist_ok=True)
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
