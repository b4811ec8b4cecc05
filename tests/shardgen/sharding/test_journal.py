"""A rebuild refused because the folder holds another build says which settings or inputs differ."""

from __future__ import annotations

import pytest

from shardgen.sharding.journal import differences
from shardgen.sharding.pipeline import BuildConfig, build_shards
from shardgen.errors import UserError


def _cfg(coco, encoder, out, **kw) -> BuildConfig:
    return BuildConfig(coco_root=coco, split="val", out=out, text_encoder=str(encoder), workers=1, progress=False,
                       **{"samples_per_shard": 5, "limit": 10, "image_size": 64, **kw})


def test_the_refusal_names_the_setting_or_input_that_differs(tmp_path, sample_coco, tiny_encoder):
    out = tmp_path / "val"
    build_shards(_cfg(sample_coco, tiny_encoder, out))
    with pytest.raises(UserError, match=r"other inputs or settings \(samples_per_shard 5 → 4\); use a new --out"):
        build_shards(_cfg(sample_coco, tiny_encoder, out, samples_per_shard=4))
    with pytest.raises(UserError, match=r"\(preprocess\.image_size 64 → 96\)"):
        build_shards(_cfg(sample_coco, tiny_encoder, out, image_size=96))
    with pytest.raises(UserError, match=r"\(the input: 10 → 8 images\)"):
        build_shards(_cfg(sample_coco, tiny_encoder, out, limit=8))


def test_differences_of_inputs_and_of_a_journal_that_recorded_no_settings():
    now = {"settings": {"split": "val", "encoder": "a", "preprocess": {"image_size": 64}},
           "inputs": {"n_images": 10, "sha256": "x"}}
    was = {"settings": {"split": "val", "encoder": "b", "preprocess": {"image_size": 64}},
           "inputs": {"n_images": 10, "sha256": "y"}}
    assert differences(was, now) == ["the text encoder",
                                     "the input: the same 10 images, other files, folders, ids or captions"]
    assert differences({"hash": "old"}, now) == []  # an older journal: the message stays general
