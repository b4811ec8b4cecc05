"""`shardgen verify` against hostile shard folders, round two: a FIFO or /dev/zero in place of a shard is listed
at once (never a hang, never read without end), a shard far longer than its manifest says is not read to its
end, and a manifest whose `embed_dim` disagrees with the shards (which the loader would refuse) fails."""

from __future__ import annotations

import json
import os

from shardgen.publish.verify import verify

from ...bounded import within
from ...helpers import copy_shards


def test_a_fifo_or_dev_zero_in_place_of_a_shard_is_a_problem(tmp_path, train_shards):
    d = copy_shards(train_shards, tmp_path / "s")
    (d / "train-000001.tar").unlink()
    os.mkfifo(d / "train-000001.tar")
    (d / "train-000002.tar").unlink()
    (d / "train-000002.tar").symlink_to("/dev/zero")
    report = within(60, verify, str(d))
    assert any(p.startswith("train-000001.tar: cannot read") and "FIFO" in p for p in report.problems)
    assert any(p.startswith("train-000002.tar: cannot read") and "device" in p for p in report.problems)
    assert report.n_shards == 5


def test_a_shard_far_longer_than_its_manifest_is_not_read_to_its_end(tmp_path, train_shards, monkeypatch):
    from shardgen.publish import verify as verify_module

    d = copy_shards(train_shards, tmp_path / "s")
    with open(d / "train-000000.tar", "ab") as fh:
        fh.write(b"\0" * 4096)
    n_bytes = json.loads((d / "manifest.json").read_text())["shards"][0]["n_bytes"]
    assert f"train-000000.tar: {n_bytes + 4096} bytes, manifest says {n_bytes}" in verify(str(d)).problems
    monkeypatch.setattr(verify_module, "SLACK_BYTES", 1024)
    assert (f"train-000000.tar: more than 1024 bytes past the {n_bytes} the manifest says; not read further"
            in verify(str(d)).problems)


def test_a_manifest_embed_dim_other_than_the_shards_fails(tmp_path, train_shards):
    d = copy_shards(train_shards, tmp_path / "s")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["embed_dim"] = 768
    (d / "manifest.json").write_text(json.dumps(manifest))
    report = verify(str(d))
    assert not report.ok and "embed_dim 768" in report.problems[0]
