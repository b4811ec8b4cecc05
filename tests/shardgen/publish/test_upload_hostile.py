"""`shardgen upload` never breaks a good remote copy: every check (local sha256s, links out of the folder, what
the destination holds) comes before the destination's indexes are removed, and a prefix holding another dataset
is refused, with one line naming it, unless --overwrite. Destinations are file:// folders (the same code path as
S3: fsspec)."""

from __future__ import annotations

import json
import shutil

import pytest

from shardgen.cli.main import main
from shardgen.format import UserError
from shardgen.publish.upload import upload
from shardgen.publish.verify import verify


@pytest.fixture
def remote(tmp_path, train_shards):
    """A good remote copy of the train shards, and its listing with contents."""
    dest = tmp_path / "bucket" / "train"
    upload(train_shards, f"file://{dest}", progress=False)
    return dest


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _copy(train_shards, where):
    shutil.copytree(train_shards, where)
    return where


def test_a_refused_upload_leaves_the_remote_copy_as_it_was(tmp_path, train_shards, remote):
    before = _snapshot(remote)
    local = _copy(train_shards, tmp_path / "edited")
    with open(local / "train-000003.tar", "r+b") as fh:  # modified after the build
        fh.seek(2000)
        fh.write(b"X")
    with pytest.raises(UserError, match="train-000003.tar: sha256 differs.*nothing was sent or removed"):
        upload(local, f"file://{remote}", progress=False)
    assert _snapshot(remote) == before and verify(str(remote)).ok


@pytest.mark.parametrize("name", ["sizes.json", "shardindex.json", "manifest.json"])
def test_indexes_linking_out_of_the_folder_are_not_sent(tmp_path, train_shards, remote, name):
    before = _snapshot(remote)
    local = _copy(train_shards, tmp_path / "linked")
    secret = tmp_path / "secret.json"
    secret.write_bytes((local / name).read_bytes())  # even a file with the right contents: it is not the folder's
    (local / name).unlink()
    (local / name).symlink_to(secret)
    with pytest.raises(UserError, match=f"{name}: leads outside"):
        upload(local, f"file://{remote}", progress=False)
    assert _snapshot(remote) == before


def _other_dataset(train_shards, where, **preprocess):
    local = _copy(train_shards, where)
    manifest = json.loads((local / "manifest.json").read_text())
    manifest["preprocess"].update(preprocess)
    (local / "manifest.json").write_text(json.dumps(manifest))
    return local


def test_a_prefix_holding_another_dataset_is_refused_unless_overwrite(tmp_path, train_shards, remote, capsys):
    before = _snapshot(remote)
    other = _other_dataset(train_shards, tmp_path / "other", image_size=256)
    assert main(["upload", str(other), f"file://{remote}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds another dataset, a train set of 48 samples in 5 shards" in err
    assert "224 px" in err and "--overwrite" in err
    assert _snapshot(remote) == before
    assert main(["upload", str(other), f"file://{remote}", "--quiet", "--overwrite"]) == 0
    assert json.loads((remote / "manifest.json").read_text())["preprocess"]["image_size"] == 256


def test_a_prefix_holding_another_split_is_refused_a_broken_manifest_replaced(tmp_path, train_shards, remote):
    manifest = json.loads((remote / "manifest.json").read_text())
    (remote / "manifest.json").write_text(json.dumps({**manifest, "split": "val", "shards": []}))
    with pytest.raises(UserError, match="another dataset, a val set"):
        upload(train_shards, f"file://{remote}", progress=False)
    (remote / "manifest.json").write_text("{not json")  # no reader can use it: nothing to protect
    upload(train_shards, f"file://{remote}", progress=False)
    assert verify(str(remote)).ok


def test_the_same_dataset_uploads_again_and_resumes(tmp_path, train_shards, remote):
    report = upload(train_shards, f"file://{remote}", progress=False)
    shards = [name for name in report.skipped if name.endswith(".tar")]  # each shard's .idx rides along
    assert len(shards) == 5 and report.uploaded == ["sizes.json", "shardindex.json", "manifest.json"]
