"""Stage 1 and 3 on their own, with members made in memory (no shard, no decode): `RecordParser` turns a group of
samples into `Record`s (caption chosen per key, the embedding row as a view, the schema's rules, skip policy) and
`collate` turns records into a batch."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from loaders import LoaderError
from loaders.shape.batches import collate
from loaders.read.records import RecordParser
from shardgen.format import EMBED_DIM, Field, encode_npy, make_key, schema

CAPTIONS = {7: ["a red square", "a square, red", "red"], 8: ["one blue circle"], 9: ["a", "b", "c", "d", "e"]}


def _embeddings(image_id: int) -> np.ndarray:
    n = len(CAPTIONS[image_id])
    return (np.arange(n * EMBED_DIM, dtype=np.float32).reshape(n, EMBED_DIM) % 97 + image_id).astype(np.float16)


def _group(ids=(7, 8, 9), **replace) -> tuple[list[str], dict[str, list]]:
    keys = [make_key(i) for i in ids]
    fields = {
        "jpg": [f"jpeg of {i}".encode() for i in ids],
        "json": [json.dumps({"image_id": i, "captions": CAPTIONS[i]}).encode() for i in ids],
        "npy": [encode_npy(_embeddings(i)) for i in ids],
        "txt": [CAPTIONS[i][0].encode() for i in ids],
    }
    for ext, members in replace.items():
        fields[ext] = members
    return keys, fields


def _parser(caption: str = "random", seed: int = 4, epoch: int = 2) -> RecordParser:
    return RecordParser(caption=caption, embed_dim=EMBED_DIM, seed=seed, epoch=epoch)


def _row(record) -> np.ndarray:
    dtype, view = record.embedding
    return np.frombuffer(view, dtype)


def test_a_random_caption_is_a_function_of_seed_epoch_and_key():
    records = _parser().parse_group("u", *_group(), skip=None)
    for r in records:
        n = len(CAPTIONS[r.image_id])
        j = zlib.crc32(f"4:2:{r.key}".encode()) % n  # the `caption` stream (loaders.plan.seeds)
        assert r.caption == CAPTIONS[r.image_id][j]
        assert np.array_equal(_row(r), _embeddings(r.image_id)[j])  # the chosen caption's row, not another
        assert bytes(r.jpeg) == f"jpeg of {r.image_id}".encode()
    alone = _parser().parse_group("u", *_group(ids=(9,)), skip=None)[0]
    assert alone.caption == records[2].caption  # whatever else the group holds
    epochs = {_parser(epoch=e).parse_group("u", *_group(ids=(9,)), skip=None)[0].caption for e in range(20)}
    assert len(epochs) >= 3  # five captions, drawn anew each epoch


def test_first_and_all_captions():
    first = _parser("first").parse_group("u", *_group(), skip=None)
    assert [r.caption for r in first] == [CAPTIONS[i][0] for i in (7, 8, 9)]
    assert all(np.array_equal(_row(r), _embeddings(r.image_id)[0]) for r in first)
    every = _parser("all").parse_group("u", *_group(), skip=None)
    assert [r.caption for r in every] == [CAPTIONS[i] for i in (7, 8, 9)]
    assert np.array_equal(every[2].embedding.reshape(5, EMBED_DIM), _embeddings(9))


def test_a_bad_sample_raises_with_url_and_key_or_is_skipped():
    keys, fields = _group(txt=[b"a red square", b"not the first caption", b"a"])
    with pytest.raises(LoaderError, match=r"^shard\.tar: 000000000008: bad sample \(txt is not the first caption\)"):
        _parser().parse_group("shard.tar", keys, fields, skip=None)
    skipped = []
    kept = _parser().parse_group("shard.tar", keys, fields, skip=skipped.append)
    assert [r.image_id for r in kept] == [7, 9] and len(skipped) == 1 and "000000000008" in str(skipped[0])


@pytest.mark.parametrize("bad,reason", [
    ({"json": [b'{"image_id": 7, "captions": []}'] + [b""] * 2}, "no captions"),
    ({"npy": [encode_npy(np.zeros((3, EMBED_DIM), np.float32))] + [b""] * 2}, "expected float16"),
    ({"json": [b'{"image_id": 9, "captions": ["x"]}'] + [b""] * 2}, "key does not match image_id 9"),
])
def test_the_schemas_rules_refuse_the_sample(bad, reason):
    keys, fields = _group(ids=(7,))
    fields.update({ext: members[:1] for ext, members in bad.items()})
    with pytest.raises(LoaderError, match=reason):
        _parser().parse_group("u", keys, fields, skip=None)


def test_a_missing_member_fails_the_whole_group_and_an_unknown_one_is_not_read():
    keys, fields = _group()
    del fields["npy"]
    skipped = []
    assert _parser().parse_group("u", keys, fields, skip=skipped.append) == []
    assert len(skipped) == 3 and all("missing npy" in str(e) for e in skipped)
    keys, fields = _group()
    fields["cls"] = [b"\xff not read"] * 3  # a field this reader does not know
    assert [r.image_id for r in _parser().parse_group("u", keys, fields, skip=None)] == [7, 8, 9]


NCHARS = Field("nchars", "characters per caption, one decimal ASCII number per line (test-only)",
               encode=lambda values: "\n".join(str(len(c)) for c in values["json"]["captions"]).encode(),
               decode=lambda data: [int(x) for x in bytes(data).split()],
               select=lambda counts, caption: counts if caption is None else counts[caption],
               batch=lambda counts: np.array(counts, np.int64))


def test_a_carried_field_keeps_the_chosen_captions_value_and_collates(monkeypatch):
    monkeypatch.setattr(schema, "SCHEMA", schema.SCHEMA.with_field(NCHARS))
    parser = _parser()
    keys, fields = _group()
    fields["nchars"] = ["\n".join(str(len(c)) for c in CAPTIONS[i]).encode() for i in (7, 8, 9)]
    records = parser.parse_group("u", keys, fields, skip=None)
    assert [r.extras for r in records] == [(len(r.caption),) for r in records]
    batch = collate(records, caption="random", embed_dim=EMBED_DIM, jpeg=False, carried=parser.carried)
    assert batch["nchars"].tolist() == [len(c) for c in batch["caption"]]


def test_collate_one_caption():
    records = _parser().parse_group("u", *_group(), skip=None)
    batch = collate(records, caption="random", embed_dim=EMBED_DIM, jpeg=True)
    assert batch["image_id"].dtype == np.int64 and batch["image_id"].tolist() == [7, 8, 9]
    assert batch["key"] == [make_key(i) for i in (7, 8, 9)] and batch["caption"] == [r.caption for r in records]
    assert batch["text_embedding"].dtype == np.float32 and batch["text_embedding"].shape == (3, EMBED_DIM)
    assert np.array_equal(batch["text_embedding"][1], _embeddings(8)[0].astype(np.float32))
    assert batch["jpeg"] == [f"jpeg of {i}".encode() for i in (7, 8, 9)]
    assert "jpeg" not in collate(records, caption="random", embed_dim=EMBED_DIM, jpeg=False)


def test_collate_all_captions_pads_with_a_mask():
    records = _parser("all").parse_group("u", *_group(), skip=None)
    batch = collate(records, caption="all", embed_dim=EMBED_DIM, jpeg=False)
    assert batch["text_embeddings"].shape == (3, 5, EMBED_DIM) and batch["caption_mask"].sum(1).tolist() == [3, 1, 5]
    assert np.array_equal(batch["text_embeddings"][0, :3], _embeddings(7).astype(np.float32))
    assert not batch["text_embeddings"][1, 1:].any() and batch["captions"][1] == CAPTIONS[8]

