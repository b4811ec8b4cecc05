"""The loader against hostile sources, round two: a FIFO in place of a local shard is a LoaderError at once (never
a hang), and counts the shards cannot hold (a manifest claiming 10^15 samples a shard, a sizes.json claiming 10^20)
are refused before an epoch is planned over them."""

from __future__ import annotations

import json
import os

import pytest

from loaders import LoaderError, make_loader
from loaders.errors import SourceError

from ..bounded import within
from ..helpers import copy_shards


def test_a_fifo_in_place_of_a_shard_fails_at_once(tmp_path, train_shards):
    d = copy_shards(train_shards, tmp_path / "s")
    (d / "train-000000.tar").unlink()
    os.mkfifo(d / "train-000000.tar")
    with pytest.raises(LoaderError, match="train-000000.tar.*FIFO"):
        within(60, lambda: list(make_loader(str(d), batch_size=8, shuffle=False)))


@pytest.mark.parametrize("n_samples", [10**15, 10**20])
def test_a_manifest_claiming_absurd_counts_is_refused(tmp_path, train_shards, n_samples):
    d = copy_shards(train_shards, tmp_path / "s")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["shards"][0]["n_samples"] = n_samples
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SourceError, match="cannot fit"):
        within(30, lambda: make_loader(str(d), batch_size=8))


@pytest.mark.parametrize("count", [10**15, 10**20, -1, "10", True])
def test_a_sizes_json_claiming_absurd_counts_is_refused(tmp_path, train_shards, count):
    d = copy_shards(train_shards, tmp_path / "s")
    (d / "manifest.json").unlink()
    sizes = json.loads((d / "sizes.json").read_text())
    sizes["train-000000.tar"] = count
    (d / "sizes.json").write_text(json.dumps(sizes))
    with pytest.raises(SourceError, match="sizes.json .* samples, not a count"):
        within(30, lambda: make_loader(str(d / "train-{000000..000004}.tar"), batch_size=8))
