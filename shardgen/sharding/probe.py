"""The cluster check before any work: one probe task per node asks whether that node can do the job, so a node
that cannot fails the build in one line (exit 2) before anything is encoded or written, not as a traceback from
its first task.

A node must read the input and the text encoder, resolve the object store's credentials and endpoint where the
input or output is a URL, and run the same toolkit and image codecs as the driver (`environment()`): Pillow and
libjpeg-turbo decide the bytes of every stored JPEG, so a node with another build would write other bytes without
any check noticing. Executors that run tasks on this machine (inline, local) share the driver's environment and
are not probed.
"""

from __future__ import annotations

import os
import secrets
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import BuildConfig
from ..errors import UserError
from ..format.storage import is_remote, redact
from .executors import Executor

PACKAGE = "coco-clip-shards"


def toolkit_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def environment() -> dict[str, str]:
    """What decides a shard's bytes besides the inputs and settings: the toolkit and the image codecs."""
    from PIL import Image, features

    found = {"toolkit": toolkit_version(), "pillow": Image.__version__,
             "libjpeg_turbo": features.version("libjpeg_turbo") or "none"}
    try:
        found["simplejpeg"] = metadata.version("simplejpeg")
    except metadata.PackageNotFoundError:
        found["simplejpeg"] = "none"
    return found


def _readable(location: str) -> str | None:
    """Why `location` (a local path, a URL or a hub id) cannot be read from here, or None."""
    if is_remote(location):
        import fsspec

        from ..format.storage import client_errors, with_timeouts

        try:
            fs, root = fsspec.core.url_to_fs(location, **with_timeouts(location))
            fs.info(root)
        except FileNotFoundError:
            return None  # an output prefix need not exist yet; the input's own readers name a missing file
        except (ImportError, ValueError) as exc:
            return f"{redact(location)}: {exc}"
        except client_errors() as exc:
            return f"{redact(location)}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return None
    path = Path(location)
    if not path.is_absolute():
        return None  # a hub id (the text encoder), not a path
    return None if path.exists() else f"{location}: no such file or folder on this node"


def probe_node(locations: list[str], token: tuple[str, str] | None = None) -> dict[str, Any]:
    """Run on a node: its name, its environment, what it cannot read, and whether it sees the driver's caption
    cache folder (`token`: a file the driver wrote there and its content)."""
    problems = [why for loc in locations if (why := _readable(loc))]
    sees = False
    if token is not None:
        try:
            sees = Path(token[0]).read_text() == token[1]
        except OSError:
            pass
    return {"node": socket.gethostname(), "pid": os.getpid(), "environment": environment(), "problems": problems,
            "sees_cache": sees}


def _locations(cfg: BuildConfig, output: str) -> list[str]:
    values = [cfg.coco_root, cfg.image_root, cfg.karpathy, cfg.captions, output]
    if Path(cfg.text_encoder).is_absolute():
        values.append(cfg.text_encoder)
    if cfg.webdataset is not None:
        values.append(cfg.webdataset.split("{", 1)[0].rsplit("/", 1)[0])
    return [str(v) for v in values if v is not None]


def _answer(future, mine: dict[str, str]) -> dict[str, Any]:
    """A node's probe result; a node whose probe takes other arguments runs another toolkit: one line."""
    try:
        return future.result()
    except TypeError as exc:  # its `probe_node` is another version's
        raise UserError(f"a node runs another shardgen version than this driver's ({mine['toolkit']}): its probe "
                        f"refused this one's arguments ({exc}); install the same version on every node") from exc


def check_nodes(pool: Executor, cfg: BuildConfig, *, output: str, cache_folder: Path | None = None) -> bool:
    """Probe every node of `pool`'s cluster (nothing for executors on this machine); raise UserError naming the
    first node that cannot do the job and why. Returns whether every node sees `cache_folder` as the driver does
    (one machine, a shared file system): then the tasks write and read the caption cache there themselves."""
    if pool.runs_here:
        return True
    mine = environment()
    token, shared = None, cache_folder is not None
    if cache_folder is not None:
        token = (str(cache_folder / f".shardgen-probe-{secrets.token_hex(8)}"), secrets.token_hex(16))
        try:
            cache_folder.mkdir(parents=True, exist_ok=True)
            Path(token[0]).write_text(token[1])
        except OSError:  # not writable here: the caption step says so, in its own words
            token, shared = None, False
    try:
        found_all = [_answer(future, mine) for future in pool.each_node(probe_node, _locations(cfg, output), token)]
    finally:
        if token is not None:
            Path(token[0]).unlink(missing_ok=True)
    shared = shared and bool(found_all)
    for found in found_all:
        shared = shared and found.get("sees_cache", False)
        where = f"node {found['node']}"
        if found["problems"]:
            raise UserError(f"{where} cannot do this build: {found['problems'][0]}")
        theirs = found["environment"]
        differ = [f"{k} {theirs.get(k)} (here {v})" for k, v in mine.items() if theirs.get(k) != v]
        if differ:
            raise UserError(f"{where} runs {', '.join(differ)}: its shards would have other bytes; install the "
                            "same versions on every node")
    return shared
