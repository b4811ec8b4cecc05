"""Small readers used by several tests (independent of loaders/, so they check the files themselves)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from shardgen.format import decode_npy, iter_tar_samples


def read_all(shard_dir: Path) -> list[tuple[str, dict]]:
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    out = []
    for shard in manifest["shards"]:
        with open(shard_dir / shard["name"], "rb") as fh:
            for key, fields in iter_tar_samples(fh):
                meta = json.loads(fields["json"])
                out.append((key, {"meta": meta, "npy": decode_npy(fields["npy"]), "txt": fields["txt"].decode(),
                                  "jpg": fields["jpg"]}))
    return out


def digests(shard_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(shard_dir.iterdir())
            if p.suffix in (".tar", ".json") and not p.name.startswith(".")}


DROP = object()  # returned by an edit: leave the member out


def rewrite_member(shard: Path, edit) -> None:
    """Rewrite a shard in place, replacing each member's bytes with `edit(name, data)` (None keeps it, DROP
    leaves it out)."""
    import io
    import tarfile

    members = []
    with tarfile.open(shard) as tar:
        for m in tar:
            members.append((m, tar.extractfile(m).read()))
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            new = edit(m.name, data)
            if new is DROP:
                continue
            if new is not None:
                data, m.size = new, len(new)
            tar.addfile(m, io.BytesIO(data))
