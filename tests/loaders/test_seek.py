"""Fewer shards than ranks × workers: one shard read by 2 ranks × 2 workers covers each sample exactly once per
epoch, and a span that starts inside a shard opens it there through the shard's DALI index (a local seek, an HTTP
Range request), with the same batches as reading through; an index that does not fit its shard is named."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from loaders import LoaderError, make_loader
from loaders.read.seek import index_url, parse_index
from tests.loaders.test_remote import s3  # noqa: F401 - the moto S3 server fixture
from tests.netutil import FileServer


@pytest.fixture(scope="module")
def one_shard(sample_shards) -> Path:
    """The 48 train images in one shard, with its DALI index."""
    out = sample_shards("train", samples_per_shard=100)
    assert len(list(out.glob("*.tar"))) == 1 and len(list(out.glob("*.idx"))) == 1
    return out


def _epoch(source, *, rank: int, epoch: int, **options) -> list[list[str]]:
    loader = make_loader(source, batch_size=5, num_workers=2, seed=3, rank=rank, world_size=2, **options)
    loader.set_epoch(epoch)
    try:
        return [list(b["key"]) for b in loader]
    finally:
        loader.close()


def _without_index(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for idx in dst.glob("*.idx"):
        idx.unlink()
    return dst


@pytest.mark.parametrize("epoch", [0, 1])
def test_one_shard_two_ranks_two_workers_reads_each_sample_once(one_shard, tmp_path, epoch):
    ranks = [_epoch(one_shard, rank=r, epoch=epoch) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5  # 24 samples per rank in batches of 5
    keys = Counter(k for batches in ranks for b in batches for k in b)
    assert len(keys) == 48 and set(keys.values()) == {1}
    plain = _without_index(one_shard, tmp_path / "plain")  # reading through gives the same batches
    assert [_epoch(plain, rank=r, epoch=epoch) for r in range(2)] == ranks


def test_mid_shard_start_is_a_range_request_over_http(one_shard, tmp_path):
    local = _epoch(one_shard, rank=1, epoch=0, shuffle=False)
    starts = parse_index((one_shard / "train-000000.idx").read_text(), url="idx").starts
    with FileServer(root=one_shard.parent) as srv:
        remote = _epoch(f"{srv.url}/{one_shard.name}/", rank=1, epoch=0, shuffle=False)
    assert remote == local
    # rank 1 reads samples 24-47: worker 0 its batches 0, 2, 4 (14 samples), worker 1 the 10 after them
    ranges = {r for path, r in srv.requests if path.endswith(".tar")}
    assert ranges == {f"bytes={starts[24]}-", f"bytes={starts[38]}-"}


def test_a_connection_dropped_mid_span_is_retried_with_a_range_request(one_shard):
    def keys(source, **options):
        loader = make_loader(source, batch_size=5, num_workers=0, seed=3, rank=1, world_size=2, shuffle=False,
                             **options)
        return [list(b["key"]) for b in loader]

    starts = parse_index((one_shard / "train-000000.idx").read_text(), url="idx").starts
    with FileServer(root=one_shard.parent) as srv:
        srv.cut_once[f"/{one_shard.name}/train-000000.tar"] = 150_000  # cut before the read window fills
        assert keys(f"{srv.url}/{one_shard.name}/", retry_backoff=0.01) == keys(one_shard)
    # rank 1's one producer reads samples 24-47: the cut read, then the retry from the same first sample
    assert [r for path, r in srv.requests if path.endswith(".tar")] == [f"bytes={starts[24]}-"] * 2


def test_a_server_that_ignores_range_gives_the_same_batches(one_shard):
    local = _epoch(one_shard, rank=1, epoch=0)
    with FileServer(root=one_shard.parent, ranges=False) as srv:
        assert _epoch(f"{srv.url}/{one_shard.name}/", rank=1, epoch=0) == local


def test_an_index_that_does_not_fit_its_shard_is_named(one_shard, tmp_path):
    bad = _without_index(one_shard, tmp_path / "bad")
    text = (one_shard / "train-000000.idx").read_text().splitlines()
    (bad / "train-000000.idx").write_text("\n".join([text[0]] + text[2:] + [text[1]]) + "\n")  # rows rotated
    with pytest.raises(LoaderError, match=r"train-000000\.idx: line 49: member data at byte 512, not after"):
        _epoch(bad, rank=1, epoch=0, shuffle=False)
    stale = text[:25] + [text[25].replace(text[25].split()[3].split(".")[0], "999999999999")] + text[26:]
    (bad / "train-000000.idx").write_text("\n".join(stale) + "\n")  # sample 24, where rank 1 starts
    with pytest.raises(LoaderError, match=r"train-000000\.idx: sample 24 is 999999999999 by the index"):
        _epoch(bad, rank=1, epoch=0, shuffle=False)
    (bad / "train-000000.idx").write_text("\n".join([f"v1.2 {len(text) - 2}"] + text[1:-1]) + "\n")
    with pytest.raises(LoaderError, match=r"train-000000\.idx: indexes 47 samples, the manifest says .* 48"):
        _epoch(bad, rank=1, epoch=0, shuffle=False)


def test_index_url_and_parse():
    assert index_url("s3://b/p/train-000003.tar") == "s3://b/p/train-000003.idx"
    idx = parse_index("v1.2 2\njpg 512 700 a.jpg json 1536 10 a.json\njpg 2560 1 b.jpg\n", url="x.idx")
    assert idx.starts == [0, 2048, 3072] and idx.keys == ["a", "b"]
    with pytest.raises(LoaderError, match="x.idx: not a DALI v1.2 index"):
        parse_index("v1.2 3\njpg 512 700 a.jpg\n", url="x.idx")
    with pytest.raises(LoaderError, match="x.idx: line 2"):
        parse_index("v1.2 1\njpg 512 seven a.jpg\n", url="x.idx")


def test_mid_shard_start_on_s3_reads_through_the_index(s3, one_shard):
    from loaders.read import seek
    from shardgen.publish.upload import upload

    upload(str(one_shard), "s3://shards/one", progress=False)
    url = "s3://shards/one/train-000000.tar"
    seek._cache.pop(url, None)
    remote = make_loader("s3://shards/one", batch_size=5, num_workers=0, seed=3, rank=1, world_size=2)
    local = make_loader(str(one_shard), batch_size=5, num_workers=0, seed=3, rank=1, world_size=2)
    assert [list(b["key"]) for b in remote] == [list(b["key"]) for b in local]
    assert seek._cache[url] is not None and len(seek._cache[url].keys) == 48  # the index was read and used
