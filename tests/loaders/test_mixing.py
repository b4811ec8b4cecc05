"""Weighted mixing of several shard sets (`loaders.plan.mixing`): per-source quotas per epoch, a short source cycling
with its own shuffle, exact epochs under ranks × workers, exact (also elastic) resume of a mixed epoch,
`batch["source"]`, and the up-front compatibility checks (one text encoder, one width, one image size)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from loaders import SourceError, StateError, make_loader
from loaders.plan.mixing import quotas
from tests.conftest import N_TRAIN, N_VAL
from tests.helpers import copy_shards


@pytest.fixture(scope="module")
def val_shards(sample_shards) -> Path:
    """The sample's 12 val images in shards of 5: a second set, built with the same encoder."""
    return sample_shards("val", samples_per_shard=5)


def _epoch(sources, *, epoch=0, world=1, workers=0, **options) -> list[tuple[int, str]]:
    """(source, key) of every sample all `world` ranks read in `epoch`."""
    drawn = []
    for rank in range(world):
        loader = make_loader([str(s) for s in sources], rank=rank, world_size=world, num_workers=workers, seed=3,
                             **options)
        loader.set_epoch(epoch)
        for batch in loader:
            drawn += zip(batch["source"].tolist(), batch["key"])
        loader.close()
    return drawn


@pytest.mark.parametrize("n", [1, 7, 40, 64, 101, 999])
def test_quotas_sum_to_n_and_round_each_weight(n):
    got = quotas([0.75, 0.25], n)
    assert sum(got) == n and all(abs(q - round(w * n)) <= 1 for q, w in zip(got, (0.75, 0.25)))
    assert quotas([3, 1], n) == got  # any scale
    three = quotas([0.5, 0.3, 0.2], n)
    assert sum(three) == n and all(abs(q - round(w * n)) <= 1 for q, w in zip(three, (0.5, 0.3, 0.2)))


def test_one_rank_takes_each_sources_quota(train_shards, val_shards):
    """0.75/0.25 over 40 samples: 30 from the train set, 10 from the val set, each batch saying its source."""
    drawn = _epoch([train_shards, val_shards], weights=[0.75, 0.25], epoch_samples=40, batch_size=4)
    per_source = Counter(s for s, _ in drawn)
    assert len(drawn) == 40 and abs(per_source[0] - 30) <= 1 and abs(per_source[1] - 10) <= 1
    assert all(k.startswith("0") for _, k in drawn)  # COCO keys; the sources' key sets are apart:
    train_keys = {k for s, k in drawn if s == 0}
    val_keys = {k for s, k in drawn if s == 1}
    assert not train_keys & val_keys
    assert len(train_keys) == per_source[0]  # 30 of 48: no sample twice


def test_short_source_cycles_with_its_own_shuffle(train_shards, val_shards):
    """The val set (12) asked for 16 per epoch: three epochs take 48 of its samples, its own four epochs, so each
    of its samples exactly 4 times; its own epochs are shuffled anew."""
    sources = [train_shards, val_shards]
    seen = Counter()
    firsts = []
    for epoch in range(3):
        drawn = _epoch(sources, epoch=epoch, weights=[3, 1], epoch_samples=64, batch_size=8, shuffle_buffer=0)
        val = [k for s, k in drawn if s == 1]
        assert len(val) == 16
        seen.update(val)
        firsts.append(val[:N_VAL])
    assert len(seen) == N_VAL and set(seen.values()) == {4}
    assert len({tuple(f) for f in firsts}) == 3


def test_two_ranks_two_workers_read_every_drawn_sample_once(train_shards, val_shards):
    """The plan draws the same samples whatever the layout: 2 ranks × 2 workers read exactly one rank's draws."""
    opts = {"weights": [0.75, 0.25], "epoch_samples": 48, "batch_size": 4}
    one = Counter(_epoch([train_shards, val_shards], epoch=1, **opts))
    four = Counter(_epoch([train_shards, val_shards], epoch=1, world=2, workers=2, **opts))
    assert one == four and sum(four.values()) == 48
    assert Counter(s for s, _ in four.elements()) == {0: 36, 1: 12}


def test_ranks_yield_equal_batches(train_shards, val_shards):
    lengths = {len(make_loader([str(train_shards), str(val_shards)], weights=[0.7, 0.3], epoch_samples=50,
                               batch_size=4, rank=r, world_size=3)) for r in range(3)}
    assert lengths == {5}  # ceil(ceil(50 / 3) / 4): DistributedSampler's padding, as for one set


def _read(sources, *, world, workers, batch_size, k=None, state=None, **options):
    """Keys of epoch 2 read by `world` ranks: the first `k` batches each (then the state), or the rest of
    `state`."""
    keys, states = [], []
    for rank in range(world):
        loader = make_loader([str(s) for s in sources], rank=rank, world_size=world, num_workers=workers,
                             batch_size=batch_size, seed=5, **options)
        if state is not None:
            loader.load_state_dict(state)
        else:
            loader.set_epoch(2)
        for i, batch in enumerate(loader):
            if k is not None and i == k:
                break
            keys += zip(batch["source"].tolist(), batch["key"])
        states.append(loader.state_dict(batches=k) if k is not None else None)
        loader.close()
    return keys, states[0]


@pytest.mark.parametrize("second", [(2, 2, 4), (1, 1, 6)])  # the same layout; another (elastic)
def test_resumed_mixed_epoch_yields_exactly_the_remainder(train_shards, val_shards, second):
    sources = [train_shards, val_shards]
    opts = {"weights": [0.75, 0.25], "epoch_samples": 48, "shuffle_buffer": 8}
    full, _ = _read(sources, world=1, workers=0, batch_size=4, **opts)
    before, state = _read(sources, world=2, workers=2, batch_size=4, k=3, **opts)
    world, workers, batch = second
    after, _ = _read(sources, world=world, workers=workers, batch_size=batch, state=state, **opts)
    assert len(before) == 24 and len(after) == 24
    assert Counter(before) + Counter(after) == Counter(full)


def test_state_of_another_mix_is_refused(train_shards, val_shards):
    sources = [str(train_shards), str(val_shards)]
    loader = make_loader(sources, weights=[0.75, 0.25], epoch_samples=48, batch_size=4, seed=5)
    loader.set_epoch(0)
    next(iter(loader))
    state = loader.state_dict()
    loader.close()
    other = make_loader(sources, weights=[0.5, 0.5], epoch_samples=48, batch_size=4, seed=5)
    with pytest.raises(StateError, match="other shards"):
        other.load_state_dict(state)


def test_sources_without_weights_are_concatenated(train_shards, val_shards):
    drawn = _epoch([train_shards, val_shards], batch_size=8)
    assert len(drawn) == N_TRAIN + N_VAL and len(set(drawn)) == N_TRAIN + N_VAL
    assert Counter(s for s, _ in drawn) == {0: N_TRAIN, 1: N_VAL}


def test_one_source_has_source_zero_and_url_lists_work_as_before(train_shards):
    loader = make_loader(str(train_shards), batch_size=8)
    assert {s for b in loader for s in b["source"].tolist()} == {0} and loader.sources == ()
    urls = sorted(str(p) for p in train_shards.glob("*.tar"))
    assert len(make_loader(urls, batch_size=8)) == 6


def test_weights_need_one_per_source_and_refuse_resampling(train_shards, val_shards):
    with pytest.raises(SourceError, match="3 weights for 2 sources"):
        make_loader([str(train_shards), str(val_shards)], weights=[1, 1, 1], batch_size=4)
    with pytest.raises(ValueError, match="resampled"):
        make_loader([str(train_shards), str(val_shards)], weights=[1, 1], resampled=True, batch_size=4)
    with pytest.raises(ValueError, match="weights must be"):
        make_loader([str(train_shards), str(val_shards)], weights=[0, 0], batch_size=4)
    with pytest.raises(SourceError, match="more than one source"):
        make_loader([str(train_shards), str(train_shards)], weights=[1, 1], batch_size=4)


def _edited(shards: Path, into: Path, edit) -> Path:
    copy_shards(shards, into)
    data = json.loads((into / "manifest.json").read_text())
    edit(data)
    (into / "manifest.json").write_text(json.dumps(data))
    return into


def test_sources_of_two_text_encoders_are_refused_naming_both(train_shards, val_shards, tmp_path):
    other = _edited(val_shards, tmp_path / "val", lambda m: m["text_encoder"].update(
        name="openai/clip-vit-base-patch16", fingerprint="clip-vit-base-patch16#0123456789abcdef"))
    with pytest.raises(SourceError, match="different text encoders") as err:
        make_loader([str(train_shards), str(other)], weights=[1, 1], batch_size=4)
    assert str(train_shards) in str(err.value) and str(other) in str(err.value)
    assert "clip-vit-base-patch16#0123456789abcdef" in str(err.value) and "\n" not in str(err.value)


def test_sources_of_two_widths_are_refused_naming_both(train_shards, val_shards, tmp_path):
    other = _edited(val_shards, tmp_path / "val", lambda m: m.update(embed_dim=768))
    with pytest.raises(SourceError, match=r"different embedding widths .*512-d.*768-d"):
        make_loader([str(train_shards), str(other)], batch_size=4)


def test_image_sizes_are_refused_the_same_in_either_order(train_shards, val_shards, tmp_path):
    """A 336 px set with a 224 px one: never cropped to the other's size silently, whichever comes first."""
    big = _edited(val_shards, tmp_path / "val336", lambda m: m["preprocess"].update(image_size=336))
    messages = []
    for order in ([train_shards, big], [big, train_shards]):
        with pytest.raises(SourceError, match="different image sizes") as err:
            make_loader([str(s) for s in order], weights=[1, 1], batch_size=4, image_size=224)
        messages.append(sorted(str(err.value).split("(")[1].split(")")[0].split("; ")))
    assert messages[0] == messages[1] and any("336 px" in m for m in messages[0])


def test_crop_modes_are_named_in_a_warning(train_shards, val_shards, tmp_path, caplog):
    other = _edited(val_shards, tmp_path / "val", lambda m: m["preprocess"].update(crop="none"))
    with caplog.at_level(logging.WARNING, logger="loaders"):
        make_loader([str(train_shards), str(other)], batch_size=4)
    assert "different crop modes" in caplog.text and "none" in caplog.text and "center" in caplog.text


def test_a_url_list_over_two_folders_is_checked_like_two_sources(train_shards, val_shards, tmp_path):
    """A `::` list (or a list of URLs) of two encoders' shards no longer trains without a word."""
    other = _edited(val_shards, tmp_path / "val", lambda m: m["text_encoder"].update(fingerprint="tower#0123456789abcdef"))
    first = sorted(train_shards.glob("*.tar"))[0]
    with pytest.raises(SourceError, match="different text encoders"):
        make_loader(f"{first}::{sorted(other.glob('*.tar'))[0]}", batch_size=4)
    same = sorted(val_shards.glob("*.tar"))[0]
    assert len(make_loader(f"{first}::{same}", batch_size=5)) == 3  # 10 + 5 samples


def _drawn(pieces) -> Counter:
    return Counter((int(s), i) for s, a, n in zip(pieces.shard, pieces.start, pieces.length) for i in range(a, a + n))


def test_the_plan_of_a_mixed_epoch_at_scale():
    """Three sets of 20 + 7 shards, 3000 samples 0.5/0.3/0.2: quotas per set; 4 ranks × 3 workers read exactly the
    plan's draws; a set's own stream covers its samples evenly across epochs; every run is inside its shard."""
    from loaders.plan.mixing import mixed_pieces
    from loaders.plan.ranks import plan_worker

    counts = (100,) * 20 + (37,) * 7 + (15,)
    shard_source = (0,) * 20 + (1,) * 7 + (2,)
    q = quotas([0.5, 0.3, 0.2], 3000)
    pieces = mixed_pieces(counts, shard_source, q, seed=1, epoch=4, shuffle=True)
    drawn = _drawn(pieces)
    assert all(0 <= i < counts[s] for s, i in drawn)
    assert [sum(v for (s, _), v in drawn.items() if shard_source[s] == k) for k in range(3)] == list(q)
    read = Counter()
    for rank in range(4):
        for worker in range(3):
            spans, sizes = plan_worker(list(counts), rank=rank, world_size=4, worker=worker, num_workers=3,
                                       batch_size=25, seed=1, epoch=4, drop_last=True, pieces=pieces)
            read.update((s.shard, i) for s in spans for i in range(s.start, s.stop))
    assert read == drawn  # 3000 = 4 × 750 = 4 × 30 batches of 25: nothing padded, nothing dropped
    small = Counter()  # set 2 holds 15 samples, takes 600 per epoch: 40 of its own epochs each
    for epoch in range(3):
        small.update(k for k in _drawn(mixed_pieces(counts, shard_source, q, seed=1, epoch=epoch, shuffle=True))
                     .elements() if shard_source[k[0]] == 2)
    assert set(small.values()) == {120}
    other = mixed_pieces(counts, shard_source, q, seed=1, epoch=5, shuffle=True)
    assert not all(np.array_equal(a, b) for a, b in zip(pieces, other))  # another epoch, another stream
