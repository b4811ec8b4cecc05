"""The build journal (`.shardgen-journal.json` in the output folder): every finished shard, written after each one,
so a killed build rerun with the same inputs and settings resumes after the last shard still intact on disk.

The journal is only a shortcut: when it is unreadable (empty, truncated, not ours) the build warns and starts over,
which rewrites the same bytes. A journal of *another* build (other inputs or settings) is refused instead, since
continuing would mix two datasets in one folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ..sources.listing import Listing
from ..config import BuildConfig
from ..errors import UserError
from ..format import shard_name
from ..format.digest import file_digests
from .outputs import Output
from ..format import write_text_atomic

JOURNAL_NAME = ".shardgen-journal.json"
_COUNTS = ("n_samples", "n_bytes", "input_end", "n_captions")


def _settings(cfg: BuildConfig, fingerprint: str) -> dict:
    return {"split": cfg.split, "encoder": fingerprint, "preprocess": cfg.preprocess_record(),
            "samples_per_shard": cfg.samples_per_shard, "max_shard_bytes": cfg.max_shard_bytes,
            "max_image_pixels": cfg.max_image_pixels}


IDENTITY_VERSION = 2  # how `build_identity` hashes the input: 2, the listing's columns (1: a line per record)


def build_identity(cfg: BuildConfig, records: Listing, fingerprint: str) -> dict:
    """What identifies a build, from its listing's columns: its hash (split, encoder, everything that changes
    which images land in which shard, and the input: ids, names, where each image is read, captions), and, so a
    refusal can say what differs, the settings and the inputs' count and digest."""
    settings = _settings(cfg, fingerprint)
    inputs = hashlib.sha256(f"listing {IDENTITY_VERSION}\n".encode())
    records.digest(inputs)
    whole = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    whole.update(inputs.digest())
    return {"hash": whole.hexdigest(), "settings": settings,
            "inputs": {"n_images": len(records), "sha256": inputs.hexdigest()}}


def _flat(settings: dict) -> dict:
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def differences(saved: dict, identity: dict) -> list[str]:
    """What differs between a journaled build (`saved`: its settings and inputs, when it recorded them) and this
    one, one phrase each (`samples_per_shard 10 → 100`, `the text encoder`, `the input: 48 → 40 images`)."""
    was, now = _flat(saved.get("settings") or {}), _flat(identity["settings"])
    found = []
    for key in sorted(set(was) | set(now)):
        if key in was and was.get(key) != now.get(key):
            found.append("the text encoder" if key == "encoder" else f"{key} {was.get(key)} → {now.get(key)}")
    inputs, was_inputs = identity["inputs"], saved.get("inputs") or {}
    if was_inputs.get("n_images", inputs["n_images"]) != inputs["n_images"]:
        found.append(f"the input: {was_inputs['n_images']} → {inputs['n_images']} images")
    elif was_inputs.get("sha256", inputs["sha256"]) != inputs["sha256"]:
        found.append(f"the input: the same {inputs['n_images']} images, other files, folders, ids or captions")
    return found


def _is_tally(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(names, list) and all(isinstance(n, str) for n in names)
                                           for names in value.values())


def _is_entry(entry: object, name: str) -> bool:
    return (isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get("sha256"), str)
            and all(type(entry.get(k)) is int and entry[k] >= 0 for k in _COUNTS)
            and _is_tally(entry.get("failures")) and _is_tally(entry.get("conversions")))


def _read(path: Path, split: str) -> tuple[dict, list[dict]] | None:
    """(the journal's settings, inputs and config hash; shard entries), or None when the file does not hold a
    journal of `split`'s shards."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("config_hash"), str) \
            or not isinstance(data.get("shards"), list):
        return None
    if not all(_is_entry(entry, shard_name(split, i)) for i, entry in enumerate(data["shards"])):
        return None
    saved = {"hash": data["config_hash"], "identity": data.get("identity", 1)}
    for key in ("settings", "inputs"):  # absent in journals written before they were recorded
        if isinstance(data.get(key), dict):
            saved[key] = data[key]
    return saved, data["shards"]


def load_journal(output: Output, split: str, identity: dict, *, warn: Callable[[str], None]) -> list[dict]:
    """Finished shards from an earlier (possibly killed) run of the build `identity` (`build_identity`); stops at
    the first one missing or altered (locally: its sha256; on a store: its size). Raises UserError naming what
    differs when the folder holds another build."""
    out = output.work
    path = out / JOURNAL_NAME
    if not path.is_file():
        return []
    journal = _read(path, split)
    if journal is None:
        warn(f"{path} is not a readable build journal; ignoring it and building every shard again")
        return []
    saved, entries = journal
    if saved["identity"] != IDENTITY_VERSION and not differences({**saved, "inputs": {
            "n_images": (saved.get("inputs") or {}).get("n_images", identity["inputs"]["n_images"])}}, identity):
        warn(f"{path} was written by another shardgen version, which identified its input another way; the "
             "settings and image count match, so building every shard again (the same bytes)")
        return []
    if saved["hash"] != identity["hash"]:
        what = "; ".join(differences(saved, identity)) or "other inputs or settings"
        raise UserError(f"{out} holds a build with other inputs or settings ({what}); use a new --out or delete it")
    done = []
    for entry in entries:
        if output.size(entry["name"]) != entry["n_bytes"]:
            break
        if not output.remote and file_digests(out / entry["name"], "sha256")[0] != entry["sha256"]:
            break
        done.append(entry)
    return done


def save_journal(out: Path, identity: dict, shards: list[dict]) -> None:
    write_text_atomic(out / JOURNAL_NAME, json.dumps({"config_hash": identity["hash"], "identity": IDENTITY_VERSION,
                                                      "settings": identity["settings"],
                                                      "inputs": identity["inputs"], "shards": shards}))
