"""The manifest is checked, not trusted: shard names follow the naming rule (so no reader opens, and `upload`
never sends, a file outside the dataset's folder), none is listed twice, counts and sizes are non-negative
integers, digests are sha256. Each crafted manifest is built here and must raise a SchemaError naming it."""

from __future__ import annotations

import json
import shutil

import pytest

from shardgen.format import Manifest, SchemaError, UserError, read_manifest
from shardgen.publish.upload import upload


def _manifest(**shard) -> dict:
    entry = {"name": "train-000000.tar", "n_samples": 10, "n_bytes": 1 << 20, "sha256": "0" * 64, **shard}
    return {"schema_version": 1, "split": "train", "text_encoder": {}, "preprocess": {}, "shards": [entry]}


@pytest.mark.parametrize("name", ["../../outside/private.txt", "/etc/passwd", "train-000000.tar/../x",
                                  "sub/train-000000.tar", "..\\train-000000.tar", "train-000000.tar\0",
                                  "val-000000.tar", "train-0.tar", "train-000000.tar ", "", 7, None])
def test_shard_names_must_follow_the_naming_rule(name):
    with pytest.raises(SchemaError, match="m.json: .*shard name"):
        Manifest.from_dict(_manifest(name=name), source="m.json")


@pytest.mark.parametrize(("field", "value"), [("n_samples", -1), ("n_samples", "10"), ("n_samples", 1.5),
                                              ("n_samples", True), ("n_bytes", -5), ("sha256", "xyz"),
                                              ("sha256", "A" * 64)])
def test_counts_sizes_and_digests_are_checked(field, value):
    with pytest.raises(SchemaError, match=f"m.json: .*{field}"):
        Manifest.from_dict(_manifest(**{field: value}), source="m.json")


def test_duplicate_shards_extra_fields_and_odd_documents_are_refused():
    data = _manifest()
    data["shards"] *= 2
    with pytest.raises(SchemaError, match="listed twice"):
        Manifest.from_dict(data, source="m.json")
    with pytest.raises(SchemaError, match="exactly name"):
        Manifest.from_dict(_manifest(extra=1), source="m.json")
    for split in ("../x", "a/b", "", None):
        with pytest.raises(SchemaError, match="split"):
            Manifest.from_dict({**_manifest(), "split": split}, source="m.json")
    for text in ("[1, 2]", "[" * 200_000 + "]" * 200_000, "\"train\"", b"\xff\xfe"):
        with pytest.raises(SchemaError, match="m.json"):
            Manifest.from_json(text, source="m.json")
    m = Manifest.from_dict(_manifest(), source="m.json")  # and an honest one still reads
    assert m.shards[0].name == "train-000000.tar" and m.n_samples == 10


def test_readers_and_upload_never_leave_the_folder(tmp_path, train_shards):
    """A manifest naming a file outside the folder is refused before anything is opened or sent; a shard that
    is a link out of the folder is refused by upload even when its checksum matches."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("secret")
    src = tmp_path / "a" / "b"
    shutil.copytree(train_shards, src)
    manifest = json.loads((src / "manifest.json").read_text())
    evil = json.loads(json.dumps(manifest))
    evil["shards"][0]["name"] = "../../outside/private.txt"
    (src / "manifest.json").write_text(json.dumps(evil))
    dest = tmp_path / "bucket"
    with pytest.raises(SchemaError, match="shard name"):
        read_manifest(str(src))
    with pytest.raises(SchemaError, match="shard name"):
        upload(src, f"file://{dest}", progress=False)
    assert not dest.exists() or not any(dest.iterdir())

    (src / "manifest.json").write_text(json.dumps(manifest))
    first = src / manifest["shards"][0]["name"]
    shutil.move(first, outside / "shard.tar")
    first.symlink_to(outside / "shard.tar")
    with pytest.raises(UserError, match="leads outside"):
        upload(src, f"file://{dest}", progress=False)
    assert not dest.exists() or not any(dest.iterdir())


@pytest.mark.parametrize(("n_samples", "n_bytes"), [(10**15, 1 << 20), (10**20, 1 << 20), (10**15, 10**19),
                                                    (257, 257 * 4096 - 1)])
def test_sample_counts_must_fit_the_shard_bytes(n_samples, n_bytes):
    """A manifest claiming 10^15 samples made the loader's plan grow for minutes; 10^20 ended in OverflowError."""
    with pytest.raises(SchemaError, match="m.json: .*(cannot fit|more than a shard)"):
        Manifest.from_dict(_manifest(n_samples=n_samples, n_bytes=n_bytes), source="m.json")
    assert Manifest.from_dict(_manifest(n_samples=256, n_bytes=256 * 4096)).n_samples == 256
