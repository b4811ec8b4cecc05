"""The build journal (`.shardgen-journal.json` in the output folder): every finished shard, written after each one,
so a killed build rerun with the same inputs and settings resumes after the last shard still intact on disk.

The journal is only a shortcut: when it is unreadable (empty, truncated, not ours) the build warns and starts over,
which rewrites the same bytes. A journal of *another* build (other inputs or settings) is refused instead, since
continuing would mix two datasets in one folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..sources.coco import CocoImage
from ..config import BuildConfig
from ..errors import UserError
from ..format import shard_name
from ..format.digest import file_digests
from .writer import write_text_atomic

JOURNAL_NAME = ".shardgen-journal.json"
_COUNTS = ("n_samples", "n_bytes", "input_end", "n_captions")


def config_hash(cfg: BuildConfig, records: Sequence[CocoImage], fingerprint: str) -> str:
    """Identifies a build: split, encoder, everything that changes which images land in which shard, and the input."""
    h = hashlib.sha256(json.dumps({
        "split": cfg.split, "encoder": fingerprint, "preprocess": cfg.preprocess_record(),
        "samples_per_shard": cfg.samples_per_shard, "max_shard_bytes": cfg.max_shard_bytes,
        "max_image_pixels": cfg.max_image_pixels,
    }, sort_keys=True).encode())
    for r in records:
        h.update(f"{r.image_id}\t{r.file_name}\t{chr(31).join(r.captions)}\n".encode())
    return h.hexdigest()


def _is_tally(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(names, list) and all(isinstance(n, str) for n in names)
                                           for names in value.values())


def _is_entry(entry: object, name: str) -> bool:
    return (isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get("sha256"), str)
            and all(type(entry.get(k)) is int and entry[k] >= 0 for k in _COUNTS)
            and _is_tally(entry.get("failures")) and _is_tally(entry.get("conversions")))


def _read(path: Path, split: str) -> tuple[str, list[dict]] | None:
    """(config hash, shard entries), or None when the file does not hold a journal of `split`'s shards."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("config_hash"), str) \
            or not isinstance(data.get("shards"), list):
        return None
    if not all(_is_entry(entry, shard_name(split, i)) for i, entry in enumerate(data["shards"])):
        return None
    return data["config_hash"], data["shards"]


def load_journal(out: Path, split: str, build_hash: str, *, warn: Callable[[str], None]) -> list[dict]:
    """Finished shards from an earlier (possibly killed) run; stops at the first one missing or altered on disk."""
    path = out / JOURNAL_NAME
    if not path.is_file():
        return []
    journal = _read(path, split)
    if journal is None:
        warn(f"{path} is not a readable build journal; ignoring it and building every shard again")
        return []
    saved_hash, entries = journal
    if saved_hash != build_hash:
        raise UserError(f"{out} holds a build with other inputs or settings; use a new --out or delete it")
    done = []
    for entry in entries:
        shard = out / entry["name"]
        if not shard.is_file() or shard.stat().st_size != entry["n_bytes"] \
                or file_digests(shard, "sha256")[0] != entry["sha256"]:
            break
        done.append(entry)
    return done


def save_journal(out: Path, build_hash: str, shards: list[dict]) -> None:
    write_text_atomic(out / JOURNAL_NAME, json.dumps({"config_hash": build_hash, "shards": shards}))
