"""The listing in columns: records go in and come out the same, slices are compact and self-contained, and the
digests see every column."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

from shardgen.sources.record import ImageRecord
from shardgen.sources.listing import Listing, Strings
from shardgen.sources.roots import TarMember

RECORDS = [ImageRecord(3, "a.jpg", Path("/img/a.jpg"), ("a cat", "é\u2028 ünïcode")),
           ImageRecord(5, "b.jpg", "s3://bucket/b.jpg", ("one",)),
           ImageRecord(9, "c.jpg", TarMember("/t/0.tar", 1536, 2048), ("x", "y", "z"))]


def test_records_round_trip_through_the_columns():
    listing = Listing.from_records(RECORDS)
    assert listing.records() == RECORDS and list(listing) == RECORDS and listing[2] == RECORDS[2]
    assert len(listing) == 3 and listing.n_captions == 6
    assert [listing.image_of_caption(k) for k in range(6)] == [0, 0, 1, 2, 2, 2]


def test_a_slice_is_a_listing_of_its_own_and_pickles_small():
    listing = Listing.from_records(RECORDS * 1000)
    part = listing[1500:1503]
    assert part.records() == [RECORDS[0], RECORDS[1], RECORDS[2]]
    assert part.first_caption.tolist() == [0, 2, 3, 6]
    assert len(pickle.dumps(part)) < 1500  # the slice's bytes, not the whole listing's
    assert len(listing[5:2]) == 0


def test_strings_take_reorders_across_pieces(monkeypatch):
    import shardgen.sources.listing as listing_module

    monkeypatch.setattr(listing_module, "_CHUNK", 3)
    texts = [f"t{i}" * (i % 4) for i in range(10)]
    strings = Strings.of(texts)
    order = np.array([9, 0, 4, 4, 7, 1, 3], np.int64)
    assert list(strings.take(order)) == [texts[i] for i in order]


def test_digests_see_the_captions_split_and_every_column():
    a = Listing.from_records([ImageRecord(1, "a.jpg", Path("/a.jpg"), ("x", "y")), ImageRecord(2, "b.jpg", Path("/b.jpg"), ("z",))])
    b = Listing.from_records([ImageRecord(1, "a.jpg", Path("/a.jpg"), ("x",)), ImageRecord(2, "b.jpg", Path("/b.jpg"), ("y", "z"))])
    c = Listing.from_records([ImageRecord(1, "a.jpg", Path("/other/a.jpg"), ("x", "y")),
                              ImageRecord(2, "b.jpg", Path("/b.jpg"), ("z",))])
    assert a.captions_digest() != b.captions_digest()  # same texts, other images
    assert a.captions_digest() == c.captions_digest()  # the cache's order depends on the captions alone

    def whole(listing):
        h = hashlib.sha256()
        listing.digest(h)
        return h.hexdigest()

    assert len({whole(a), whole(b), whole(c)}) == 3  # the build identity: where an image is read counts


def test_a_source_that_breaks_the_id_order_is_a_bug_with_its_traceback(monkeypatch, tmp_path):
    import dataclasses

    import pytest

    from shardgen.config import BuildConfig
    from shardgen.sharding.inputs import load_input
    from shardgen.sources.coco import CaptionReport
    from shardgen.sources.inputs import Loaded

    twice = [ImageRecord(5, "a.jpg", Path("/a.jpg"), ("x",)), ImageRecord(5, "b.jpg", Path("/b.jpg"), ("y",))]
    cfg = BuildConfig(coco_root=tmp_path, split="val", out=tmp_path / "o")
    kind = cfg.input_kind()
    monkeypatch.setattr(type(cfg), "input_kind", lambda self: dataclasses.replace(kind,
        load=lambda c: Loaded(twice, CaptionReport(), None, "f", "i", "test", "l", [])))
    with pytest.raises(ValueError, match="the test input listed its images out of id order or one id twice"):
        load_input(cfg)
