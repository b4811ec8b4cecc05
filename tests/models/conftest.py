"""Fixtures for the models tests: the sample's train images as 64 px shards, where a ResNet18 step takes ~0.1 s."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_shards(sample_shards) -> Path:
    """48 train images at 64 px in shards of 10 (6 steps per epoch at batch size 8)."""
    return sample_shards("train", image_size=64)
