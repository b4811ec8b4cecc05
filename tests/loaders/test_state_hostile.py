"""Crafted loader states (a checkpoint is a file anyone can edit): every field is bounded before anything is
planned from it, so absurd worker counts or world sizes fail at once, and epoch -1 or a world size of inf is one
ValueError rather than a numpy or Overflow traceback; a state of other shards with the same counts is refused by
the shards' identity."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from loaders import make_loader

from ..bounded import within


@pytest.fixture(scope="module")
def state(train_shards):
    loader = make_loader(str(train_shards), batch_size=4, seed=5)
    loader.set_epoch(3)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    saved = loader.state_dict()
    loader.close()
    return saved


def _segment(state, **fields):
    return {**state, "segments": [{**state["segments"][0], **fields}]}


CRAFTED = {
    "workers 10^9": lambda s: _segment(s, workers=10**9),
    "earlier segment of world 10^8": lambda s: {**s, "segments": [{**s["segments"][0], "world_size": 10**8},
                                                                   s["segments"][0]]},
    "epoch -1": lambda s: {**s, "epoch": -1},
    "world size inf": lambda s: _segment(s, world_size=float("inf")),
    "world size 1.5": lambda s: _segment(s, world_size=1.5),
    "batch size nan": lambda s: _segment(s, batch_size=float("nan")),
    "seed -1": lambda s: {**s, "seed": -1},
    "samples 10^30": lambda s: _segment(s, samples=10**30),
    "10^6 segments": lambda s: {**s, "segments": s["segments"] * 10**6},
    "shuffle 'yes'": lambda s: {**s, "shuffle": "yes"},
    "identity not a digest": lambda s: {**s, "shards": 42},
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_states_fail_at_once_with_one_value_error(train_shards, state, name):
    loader = make_loader(str(train_shards), batch_size=4, seed=5)
    with pytest.raises(ValueError, match="not a loader state dict"):
        within(20, loader.load_state_dict, CRAFTED[name](state))


def test_layouts_the_shards_do_not_allow_are_refused(train_shards, state):
    """48 samples allow 48 producers (ranks × workers) at most: a state claiming 16 ranks × 4 workers is not theirs
    (replaying it would loop over every producer)."""
    loader = make_loader(str(train_shards), batch_size=4, seed=5)
    with pytest.raises(ValueError, match=r"more producers \(ranks × workers\) than these shards have samples \(48\)"):
        loader.load_state_dict(_segment(state, world_size=16, workers=4, samples=0))
    with pytest.raises(ValueError, match="more than an epoch of 48 holds"):
        loader.load_state_dict(_segment(state, samples=48 + 4))


def test_a_state_of_rebuilt_shards_with_the_same_counts_is_refused(tmp_path, train_shards, state):
    assert len(state["shards"]) == 64
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(train_shards, rebuilt)
    manifest = json.loads((rebuilt / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = "ab" * 32  # other images, same counts
    (rebuilt / "manifest.json").write_text(json.dumps(manifest))
    loader = make_loader(str(rebuilt), batch_size=4, seed=5)
    with pytest.raises(ValueError, match="other shards"):
        loader.load_state_dict(state)


def test_a_state_without_identity_is_accepted_with_a_warning(train_shards, state, caplog):
    old = {k: v for k, v in state.items() if k != "shards"}
    loader = make_loader(str(train_shards), batch_size=4, seed=5)
    with caplog.at_level(logging.WARNING, logger="loaders"):
        loader.load_state_dict(old)
    assert loader.batches_in_pass == 12 - 2 and "names no shard set" in caplog.text
