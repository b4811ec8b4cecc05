"""Where `models.evaluate` puts what it finds: file names per shard set (`eval-<shards>-<hash>[-<protocol>].json`,
and the pictures' `<kind>-<shards>-<hash>.png`), so evaluating other shards never overwrites a run's results."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from shardgen.format import is_remote, redact


def shards_label(shards: str) -> str:
    """A file-name-safe name for a shard source: its last path component and a hash of the whole resolved source,
    so two shard sets never share a results file (`/data/coco/val/` → `val-3f2a1c`). A URL's password is no part
    of it (neither of the name nor of the hash)."""
    source = redact(shards) if is_remote(str(shards)) else str(Path(shards).resolve())
    last = source.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")
    last = re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("._") or "shards"
    return f"{last}-{hashlib.sha256(source.encode()).hexdigest()[:6]}"


def results_path(out_dir: Path, shards: str, protocol: str = "all") -> Path:
    """`eval-<shards>.json` for the whole-split protocol, `eval-<shards>-<protocol>.json` for 5k and 1k."""
    return out_dir / f"eval-{shards_label(shards)}{'' if protocol == 'all' else f'-{protocol}'}.json"
