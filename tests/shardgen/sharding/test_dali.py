"""The per-shard DALI `.idx` the writer writes from its own offsets equals the one a walk of the finished tar gives
(`build.dali`, checked against GNU tar in tests/shardgen/format/test_readers.py); where a member takes more than
one header block (a long name), the writer writes none and the build's walk does."""

from __future__ import annotations

from shardgen.sharding.dali import shard_index_text
from shardgen.sharding.writer import write_shard
from shardgen.format.schema import Sample


def test_the_writers_index_is_the_walks(sample_shards):
    out = sample_shards("val", samples_per_shard=5)
    shards = sorted(out.glob("val-*.tar"))
    assert shards and all(s.with_suffix(".idx").read_text() == shard_index_text(s) for s in shards)


def test_a_long_member_name_leaves_the_index_to_the_walk(tmp_path):
    values = {"jpg": b"\xff\xd8" + b"x" * 700, "json": b"{}", "npy": b"\x00" * 10, "txt": b"a caption"}

    class Raw:  # encodes the values as they are: this test is about the tar layout, not the sample's rules
        exts = ("jpg", "json", "npy", "txt")

        @staticmethod
        def encode(v):
            return dict(v)

    import shardgen.format.schema as schema

    real = schema.SCHEMA
    schema.SCHEMA = Raw
    try:
        short = write_shard(tmp_path / "a.tar", [Sample("000000000001", values)], index=True)
        long_key = "1" * 120  # past USTAR's 100-character name field: a pax header block precedes each member
        write_shard(tmp_path / "b.tar", [Sample(long_key, values)], index=True)
    finally:
        schema.SCHEMA = real
    assert short.n_samples == 1
    assert (tmp_path / "a.idx").read_text() == shard_index_text(tmp_path / "a.tar")
    assert not (tmp_path / "b.idx").exists()
