"""Shared fixtures: a synthetic COCO folder, a tiny random-init CLIP text encoder, and shards built from them.

Session-scoped so the suite builds each once; tests that modify data copy it to their own tmp_path first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

N_TRAIN, N_VAL = 48, 12


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    from shardgen.text.random_init import init_encoder

    return init_encoder(tmp_path_factory.mktemp("enc") / "clip-tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def sample_coco(tmp_path_factory) -> Path:
    from shardgen.sources.synthetic import make_sample

    return make_sample(tmp_path_factory.mktemp("coco") / "coco2014", images=N_TRAIN, val_images=N_VAL, seed=0)


def _build(tmp_path_factory, coco: Path, encoder: Path, split: str, per_shard: int) -> Path:
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    out = tmp_path_factory.mktemp("shards") / split
    build_shards(BuildConfig(coco_root=coco, split=split, out=out, text_encoder=str(encoder),
                             samples_per_shard=per_shard, workers=1, progress=False))
    return out


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory, sample_coco, tiny_encoder) -> Path:
    """48 train images in shards of 10 (5 shards, the last one partial)."""
    return _build(tmp_path_factory, sample_coco, tiny_encoder, "train", 10)

