"""`resolve_source` on its own: what a user passes to `make_loader` (a shard folder, a brace pattern, a list of
URLs) becomes shard URLs with their sample counts from the manifest or `sizes.json`, or one `SourceError` line
that says what to give instead. Only metadata is read: the folders here hold no shard bytes."""

from __future__ import annotations

import json
import shutil

import pytest

from loaders import SourceError, resolve_source
from shardgen.format import MANIFEST_NAME


@pytest.fixture
def manifest_only(train_shards, tmp_path):
    """The train shards' manifest alone in a folder (5 shards: 10, 10, 10, 10, 8 samples)."""
    folder = tmp_path / "train"
    folder.mkdir()
    shutil.copy(train_shards / MANIFEST_NAME, folder)
    return folder


def test_a_folder_gives_its_manifests_shards(manifest_only):
    shards = resolve_source(str(manifest_only))
    assert [u.rsplit("/", 1)[-1] for u in shards.urls] == [f"train-{i:06d}.tar" for i in range(5)]
    assert shards.counts == [10, 10, 10, 10, 8] and shards.n_samples == 48 and shards.manifest is not None


def test_a_brace_pattern_and_a_list_take_counts_from_the_manifest_beside_them(manifest_only):
    pattern = resolve_source(f"{manifest_only}/train-{{000001..000004}}.tar")
    assert pattern.counts == [10, 10, 10, 8]
    listed = resolve_source([f"{manifest_only}/train-000004.tar", f"{manifest_only}/train-000000.tar"])
    assert listed.counts == [8, 10] and listed.urls[0].endswith("train-000004.tar")


def test_sizes_json_stands_in_for_a_manifest(tmp_path):
    (tmp_path / "sizes.json").write_text(json.dumps({"a.tar": 3, "b.tar": 4}))
    shards = resolve_source([str(tmp_path / "b.tar"), str(tmp_path / "a.tar")])
    assert shards.counts == [4, 3] and shards.manifest is None


@pytest.mark.parametrize("sizes,match", [
    ({"a.tar": -1}, "gives -1 samples, not a count"),
    ({"a.tar": True}, "gives True samples"),
    ({"other.tar": 3}, "not listed in the manifest"),
])
def test_a_bad_count_is_refused(tmp_path, sizes, match):
    (tmp_path / "sizes.json").write_text(json.dumps(sizes))
    with pytest.raises(SourceError, match=match):
        resolve_source([str(tmp_path / "a.tar")])


def test_what_to_give_instead(tmp_path, manifest_only):
    with pytest.raises(SourceError, match="no such folder; give a shard folder"):
        resolve_source(str(tmp_path / "nowhere"))
    with pytest.raises(SourceError, match=r"holds the shard folders train, not shards: give one of them"):
        resolve_source(str(manifest_only.parent))
    with pytest.raises(SourceError, match="no manifest.json or sizes.json"):
        resolve_source([str(tmp_path / "x.tar")])
    with pytest.raises(SourceError, match="no shards given"):
        resolve_source([])
    with pytest.raises(SourceError, match="embeddings are 512-d, the loader expects 256-d"):
        resolve_source(str(manifest_only), embed_dim=256)
