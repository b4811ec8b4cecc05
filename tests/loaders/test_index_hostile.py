"""A lying DALI index (issue 29): one whose keys and offsets agree with each other but are shifted by three
samples passes the landing check; the read that then runs out of shard blames the index, naming the `.idx`, not
the intact shard. An index offset where no sample starts is the index's fault too."""

from __future__ import annotations

import shutil

import pytest

from loaders import LoaderError, make_loader
from tests.loaders.test_seek import one_shard  # noqa: F401 - the one-shard fixture, shared
from tests.shardgen.publish.test_verify_index import shifted_index


def _epoch(source) -> None:
    for rank in range(2):
        loader = make_loader(source, batch_size=5, num_workers=2, seed=3, rank=rank, world_size=2, shuffle=False)
        try:
            list(loader)
        finally:
            loader.close()


def test_a_shifted_index_is_blamed_not_the_shard(one_shard, tmp_path):  # noqa: F811
    bad = tmp_path / "shifted"
    shutil.copytree(one_shard, bad)
    shifted_index(bad / "train-000000.idx")
    with pytest.raises(LoaderError, match=r"train-000000\.idx: places sample \d+ at byte \d+ of .*train-000000\.tar, "
                                          r"but the shard ends .*: the index does not fit its shard"):
        _epoch(bad)


def test_an_index_offset_where_no_sample_starts_is_blamed_on_the_index(one_shard, tmp_path):  # noqa: F811
    bad = tmp_path / "off"
    shutil.copytree(one_shard, bad)
    lines = (bad / "train-000000.idx").read_text().splitlines()
    fields = lines[24].split()  # sample 23 made to end inside its own .npy: sample 24 "starts" mid-member
    npy, txt = fields.index("npy"), fields.index("txt")
    fields[npy + 2] = "2000"
    fields[txt + 1] = str(int(fields[npy + 1]) + 512)
    lines[24] = " ".join(fields)
    (bad / "train-000000.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(LoaderError, match=r"train-000000\.idx: places sample 24 at byte \d+ of .*train-000000\.tar, "
                                          r"but no sample starts there .*: the index does not fit its shard"):
        _epoch(bad)
