"""The random streams `seed` feeds (`loaders.plan.seeds`): every draw that decides a batch's contents is pinned here —
which samples (shard order, resampling, the shuffle buffer), which caption, which crop window and flip — as a
digest recorded from the derivations before the streams were gathered into one table, so moving or renaming a
stream cannot change a batch."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from loaders import make_loader

OPTIONS = {"batch_size": 8, "seed": 11, "crop": "random", "flip": True, "image_size": 48, "decode": "gpu"}
# sha256 of the batches' keys, captions and crop/flip draws (see `_digest`), recorded before the switch
PINNED = {
    "shuffled": "5f89455f5f233e09623bfdf2cb83c5e85d61cf3619c16db9c726b14c7e2d766a",
    "workers": "8b552d3efb5f12c4298de746c7d51d2df73dd866219e3572094f10bdc1575a8a",
    "resampled": "255143fb437de8a5bf7fc2f3ecb6bb398e194172eaf3009220bcd514035c6157",
    "rank": "3218ba3a63c8deaa7ab90ee5aa78a04f66bf0fef6e7a096b387ed110573ede0c",
}
CASES = {
    "shuffled": {},
    "workers": {"num_workers": 2, "shuffle_buffer": 7},
    "resampled": {"resampled": True},
    "rank": {"rank": 1, "world_size": 2, "caption": "first"},
}


def _draws(augment) -> tuple:
    """(origins, flips) of a batch's crop-and-flip draws."""
    return augment.origins, augment.flips


def _digest(loader, epoch: int) -> str:
    loader.set_epoch(epoch)
    seen = []
    for batch in loader:
        origins, flips = _draws(batch["augment"])
        seen.append([batch["key"], batch["caption"], origins, flips])
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_batches_are_what_the_seed_always_gave(train_shards, case):
    loader = make_loader(str(train_shards), **{**OPTIONS, **CASES[case]})
    assert _digest(loader, 3) == PINNED[case]


def test_every_stream_is_in_the_documented_table():
    from loaders.plan import seeds

    rows = re.findall(r"^\| `(\w+)` ", seeds.__doc__, flags=re.M)
    assert rows == list(seeds.STREAMS)


def test_a_stream_is_drawn_only_with_its_own_keys():
    from loaders.plan.seeds import generator

    assert generator("augment", 1, 2, 0, 1).random() == generator("augment", 1, 2, 0, 1).random()
    assert generator("augment", 1, 2, 0, 1).random() != generator("shuffle", 1, 2, 0, 1).random()
    with pytest.raises(TypeError, match="keyed by"):
        generator("plan", 1, 2, 0, 1)  # plan is keyed by the epoch alone
    with pytest.raises(TypeError, match="not a numpy generator"):
        generator("caption", 1, 2, 3)


def test_no_generator_is_seeded_outside_the_table():
    """loaders and models make numpy generators only through `loaders.plan.seeds` (a salt typed elsewhere would be a
    stream the table does not name)."""
    root = Path(__file__).resolve().parents[2]
    for path in [*(root / "loaders").glob("*.py"), *(root / "models").glob("*.py")]:
        if path.name != "seeds.py":
            assert "default_rng(" not in path.read_text(), f"{path.name} makes a generator of its own"
