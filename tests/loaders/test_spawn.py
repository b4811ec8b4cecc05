"""The loader's workers under the spawn start method (the default on macOS and Windows), forced here on Linux:
exactly the batches fork gives, over two epochs of persistent workers."""

from __future__ import annotations

import multiprocessing

import pytest
import torch

from loaders import make_loader


@pytest.fixture
def spawn():
    """Make spawn the default start method for this test (as on macOS), then restore the platform's."""
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(before, force=True)


def _epochs(source, **options) -> list[tuple[list[str], torch.Tensor]]:
    loader = make_loader(source, batch_size=7, num_workers=2, seed=5, **options)
    batches = []
    try:
        for epoch in range(2):
            loader.set_epoch(epoch)
            batches += [(list(b["key"]), b["image"].clone()) for b in loader]
        return batches
    finally:
        loader.close()


def _same(a, b) -> None:
    assert [k for k, _ in a] == [k for k, _ in b]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))


@pytest.mark.slow
def test_spawned_workers_give_the_batches_forked_ones_give(train_shards, spawn):
    multiprocessing.set_start_method("fork", force=True)
    forked = _epochs(str(train_shards))
    multiprocessing.set_start_method("spawn", force=True)
    spawned = _epochs(str(train_shards))
    assert len(forked) == 2 * 7  # 48 samples in batches of 7, two epochs
    _same(spawned, forked)
