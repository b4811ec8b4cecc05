"""Fixtures for the models tests: the sample's train images as 64 px shards, where a ResNet18 step takes ~0.1 s."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory, sample_coco, tiny_encoder) -> Path:
    """48 train images at 64 px in shards of 10 (6 steps per epoch at batch size 8)."""
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    out = tmp_path_factory.mktemp("small") / "train"
    build_shards(BuildConfig(coco_root=sample_coco, split="train", out=out, text_encoder=str(tiny_encoder),
                             image_size=64, samples_per_shard=10, workers=1, progress=False))
    return out
