"""The loader's state dict: round trip, exact continuation in the same layout, and elastic continuation (another
world size, worker count or batch size) that reads each unseen sample of the epoch once."""

import io
import json
from collections import Counter

import numpy as np
import pytest
import torch

from loaders import make_loader
from loaders.plan.ranks import Layout, plan_remainder, rank_used, seen_positions, worker_share


def _interrupted(shards, *, world, k, **options):
    """Each of `world` simulated ranks reads `k` batches of epoch 3; returns (keys read, the state dict)."""
    keys, states = [], []
    for rank in range(world):
        loader = make_loader(str(shards), seed=5, rank=rank, world_size=world, **options)
        loader.set_epoch(3)
        for i, batch in enumerate(loader):
            if i == k:
                break
            keys += batch["key"]
        states.append(loader.state_dict(batches=k))
        loader.close()
    assert all(s == states[0] for s in states)  # every rank describes the same global position
    return keys, states[0]


def _rest(shards, state, *, world, **options):
    keys = []
    for rank in range(world):
        loader = make_loader(str(shards), seed=5, rank=rank, world_size=world, **options)
        loader.load_state_dict(state)
        expected = loader.batches_in_pass
        batches = [b["key"] for b in loader]
        assert len(batches) == expected
        keys += [k for b in batches for k in b]
        loader.close()
    return keys


def test_state_dict_round_trip_and_exact_continuation(train_shards):
    """Plain data (JSON and weights_only torch.load); the same layout continues exactly as if uninterrupted."""
    opts = {"batch_size": 4, "num_workers": 2, "seed": 5, "crop": "random", "flip": True}
    full = make_loader(str(train_shards), **opts)
    full.set_epoch(3)
    ref = list(full)
    loader = make_loader(str(train_shards), **opts)
    loader.set_epoch(3)
    for i, _ in enumerate(loader):
        if i == 4:
            break
    state = loader.state_dict()  # 5 batches handed out
    assert state["epoch"] == 3 and state["samples"] == 20 and state["seed"] == 5
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == json.loads(json.dumps(state)) == state
    resumed = make_loader(str(train_shards), **opts)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state and resumed.batches_in_pass == 7
    rest = list(resumed)
    assert len(rest) == 7
    for a, b in zip(ref[5:], rest):
        assert a["key"] == b["key"] and torch.equal(a["image"], b["image"])
    end = resumed.state_dict()
    assert end["samples"] == 48
    again = make_loader(str(train_shards), **opts)
    again.load_state_dict(end)  # a finished epoch: the next one, from its start
    assert again.epoch == 4 and again.state_dict()["samples"] == 0 and len(list(again)) == 12
    for loader_ in (full, loader, resumed, again):
        loader_.close()


@pytest.mark.parametrize("first,second", [
    ((2, 2, 4), (1, 2, 6)),  # fewer ranks, larger batches
    ((1, 2, 4), (3, 1, 2)),  # more ranks, fewer workers, smaller batches (one padded sample)
])
def test_another_layout_reads_each_unseen_sample_once(train_shards, first, second):
    (w1, nw1, b1), (w2, nw2, b2) = first, second
    aug = {"crop": "random", "flip": True}  # augmentation draws must not move the shuffle order
    seen, state = _interrupted(train_shards, world=w1, k=2, batch_size=b1, num_workers=nw1, **aug)
    rest = _rest(train_shards, state, world=w2, batch_size=b2, num_workers=nw2, **aug)
    assert not set(seen) & set(rest)
    counts = Counter(seen + rest)
    assert len(counts) == 48  # the epoch, every sample
    assert sum(counts.values()) - 48 == -(48 - len(seen)) % w2  # only DistributedSampler-style padding
    assert rest == _rest(train_shards, state, world=w2, batch_size=b2, num_workers=nw2, **aug)  # deterministic


def test_batch_size_change_with_drop_last_then_another_change(train_shards):
    """Twice resumed in other layouts within one epoch; drop_last leaves out the rank remainders only."""
    seen, state = _interrupted(train_shards, world=1, k=3, batch_size=8, num_workers=0, drop_last=True)
    loader = make_loader(str(train_shards), seed=5, batch_size=12, num_workers=2, drop_last=True)
    loader.load_state_dict(state)
    it = iter(loader)
    second = next(it)["key"]
    state = loader.state_dict()
    del it
    loader.close()
    assert state["samples"] == 24 + 12 and [s["batch_size"] for s in state["segments"]] == [8, 12]
    rest = _rest(train_shards, state, world=2, batch_size=5, num_workers=1, drop_last=True)
    keys = seen + second + rest
    assert len(keys) == len(set(keys)) == 24 + 12 + 10  # 12 left: 6 per rank, one batch of 5 each


def test_resume_errors_say_why(train_shards):
    _, state = _interrupted(train_shards, world=1, k=2, batch_size=4)
    other_seed = make_loader(str(train_shards), batch_size=4, seed=6)
    with pytest.raises(ValueError, match="seed 5.*this loader has seed 6"):
        other_seed.load_state_dict(state)
    with pytest.raises(ValueError, match="of 40 samples in 5 shards; these shards hold 48 in 5"):
        other_seed.load_state_dict({**state, "n_samples": 40})
    with pytest.raises(ValueError, match="not a loader state dict"):
        other_seed.load_state_dict({"epoch": 1})
    resampled = make_loader(str(train_shards), batch_size=4, seed=5, resampled=True)
    with pytest.raises(ValueError, match="seed 5, shuffle=True, resampled=False"):
        resampled.load_state_dict(state)
    at_start = {**state, "segments": [{**state["segments"][0], "samples": 0}]}
    other_seed.load_state_dict(at_start)  # at an epoch's start any seed goes
    assert other_seed.epoch == 3


@pytest.mark.parametrize("counts,first,second,k", [
    ([10, 10, 10, 10, 8], Layout(2, 2, 4, False, 1000), Layout(3, 2, 5, False, 1000), 3),
    ([1000] * 20 + [783], Layout(8, 4, 64, False, 1000), Layout(3, 5, 48, True, 500), 17),
    ([7, 3, 9], Layout(1, 1, 2, False, 0), Layout(2, 1, 3, False, 0), 4),
])
def test_plans_replayed_and_remainder_cover_the_epoch(counts, first, second, k):
    """Without reading a byte: what `first` consumed in k batches per rank, plus the remainder planned for
    `second`, is every position once, up to padding (drop_last: up to the dropped remainders)."""
    n = sum(counts)
    seen = seen_positions(np.arange(n), first, rank_batches_done=k, seed=1, epoch=2)
    assert len(seen) == first.world_size * k * first.batch_size  # whole batches of every rank, no duplicates
    stream = np.setdiff1d(np.arange(n), seen)
    read = Counter()
    for rank in range(second.world_size):
        for worker in range(second.workers):
            spans, sizes = plan_remainder(counts, stream, second, rank=rank, worker=worker, seed=1, epoch=2,
                                          shuffle=True)
            assert sum(len(s) for s in spans) == sum(sizes) == sum(worker_share(len(stream), second, rank=rank,
                                                                                worker=worker)[1])
            order = np.random.default_rng([1, 2, 0x5EED]).permutation(len(counts))
            offsets = np.cumsum([0] + [counts[s] for s in order])
            where = {int(s): int(offsets[i]) for i, s in enumerate(order)}
            read.update(where[s.shard] + i for s in spans for i in range(s.start, s.stop) if i not in s.skip)
    assert not set(read) & set(seen.tolist())
    if second.drop_last:
        assert max(read.values()) == 1 and len(read) == second.world_size * rank_used(len(stream), second)
    else:
        padding = -len(stream) % second.world_size
        assert set(read) == set(stream.tolist()) and sum(read.values()) - len(stream) == padding


def test_set_epoch_of_the_loaded_epoch_keeps_the_resumed_pass(train_shards):
    """The usual `for epoch in range(E): loader.set_epoch(epoch)` loop around a resume must not start the loaded
    epoch over."""
    opts = {"batch_size": 4, "seed": 3}
    first = make_loader(str(train_shards), **opts)
    first.set_epoch(0)
    seen = []
    for i, batch in enumerate(first):
        seen += batch["key"]
        if i == 2:
            break
    state = first.state_dict(batches=3)
    resumed = make_loader(str(train_shards), **opts)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)
    rest = [k for batch in resumed for k in batch["key"]]
    assert sorted(seen + rest) == sorted(k for batch in make_loader(str(train_shards), **opts) for k in batch["key"])
