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


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory, sample_coco, tiny_encoder):
    """The one way tests build shards: `sample_shards(split, **options)` gives the sample's `split` ("train": 48
    images, "val": 12) built with the tiny encoder and `BuildConfig` `options` (default 10 samples per shard),
    once per session for each set of options. Read-only: a test that edits shards copies them first
    (`helpers.copy_shards`)."""
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    built: dict[tuple, Path] = {}

    def build(split: str = "train", **options) -> Path:
        options = {"samples_per_shard": 10, **options}
        key = (split, tuple(sorted(options.items())))
        if key not in built:
            out = tmp_path_factory.mktemp("shards") / split
            build_shards(BuildConfig(coco_root=sample_coco, split=split, out=out, text_encoder=str(tiny_encoder),
                                     workers=1, progress=False, **options))
            built[key] = out
        return built[key]

    return build


@pytest.fixture(scope="session")
def train_shards(sample_shards) -> Path:
    """48 train images in shards of 10 (5 shards, the last one partial)."""
    return sample_shards("train")
