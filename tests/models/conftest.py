"""Fixtures for the models tests: the sample's train images as 64 px shards, where a ResNet18 step takes ~0.1 s,
and a one-step run on them (a checkpoint to evaluate)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_shards(sample_shards) -> Path:
    """48 train images at 64 px in shards of 10 (6 steps per epoch at batch size 8)."""
    return sample_shards("train", image_size=64)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_shards) -> Path:
    """A training run folder of one ResNet18 step on `small_shards` (in process: ~3 s)."""
    from loaders import LoaderConfig
    from models.train import TrainConfig, train

    run = tmp_path_factory.mktemp("eval") / "run"
    train(TrainConfig(train_shards=str(small_shards), out=str(run), arch="resnet18", pretrained=False, max_steps=1,
                      progress=False, loader=LoaderConfig(batch_size=8, num_workers=0, decode_threads=1)))
    return run
