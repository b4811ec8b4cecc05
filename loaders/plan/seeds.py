"""The random streams one `seed` feeds, named once: what each decides, what it is keyed by, and its salt.

A run has one seed (`LoaderConfig.seed`, `TrainConfig.seed`). Each decision draws from a stream of its own,
derived from the seed, the keys below and the stream's salt, so one decision never moves another's numbers: the
shuffle buffer's order is a function of the plan alone (which `loaders.plan.resume` replays without reading a byte),
and a batch's crops do not depend on which samples were skipped.

| stream      | decides                                          | keyed by (after the seed)  | derived as       |
|-------------|--------------------------------------------------|----------------------------|------------------|
| `plan`      | the epoch's shard order                          | epoch                      | numpy, salted    |
| `resample`  | `resampled=True`: the shards a producer draws    | epoch, rank, worker        | numpy, salted    |
| `source_order` | mixed sets: a set's shard order in each of its | the set's own pass, set    | numpy, salted    |
|             | own passes (a short set cycles)                  |                            |                  |
| `mix`       | mixed sets: where each set's chunks interleave   | epoch                      | numpy, salted    |
| `shuffle`   | the shuffle buffer's order                       | epoch, rank, worker        | numpy (no salt)  |
| `caption`   | `caption="random"`: each sample's caption        | epoch, the sample's key    | crc32, mod n     |
| `augment`   | a batch's crops and flips; children spawned from | epoch, rank, worker        | numpy, salted    |
|             | it: each extra augmentation's draws              |                            |                  |
| `workers`   | a worker's global `random`, numpy, torch         | worker                     | seed + worker    |
| `model`     | the model's initial weights (models.train)       | -                          | torch, seed      |
| `synthetic` | `--synthetic` batches (models.training.synthetic) | -                          | torch, seed      |

"numpy" is `np.random.default_rng([seed, *keys, *salt])` with the salt in `STREAMS` below; "crc32" is the crc32
of "seed:epoch:key", mod the sample's number of captions; "torch, seed" is a torch generator seeded with the
seed itself. The salts are the values each stream had before they were gathered here
(tests/loaders/test_random_streams.py pins the batches they give), so a seed gives the batches it always gave.
`shardgen make-sample --seed` is the synthetic COCO folder's own seed, not this one.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np


class Stream(NamedTuple):
    """One named random stream: what it decides, what it is keyed by after the seed, and its salt (appended to
    the generator's entropy; empty for a stream that is not a numpy generator)."""

    decides: str
    keys: tuple[str, ...]
    salt: tuple[int, ...] = ()


STREAMS: dict[str, Stream] = {
    "plan": Stream("the epoch's shard order", ("epoch",), (0x5EED,)),
    "resample": Stream("the shards a producer draws with resampled=True", ("epoch", "rank", "worker"), (0xA11,)),
    "source_order": Stream("a mixed set's shard order in each of its own passes", ("epoch", "source"), (0x5EED,)),
    "mix": Stream("where each mixed set's chunks interleave in an epoch", ("epoch",), (0x313,)),
    "shuffle": Stream("the shuffle buffer's order", ("epoch", "rank", "worker")),
    "caption": Stream("each sample's caption (caption='random')", ("epoch", "key")),
    "augment": Stream("each batch's crop windows, flips and extra augmentations", ("epoch", "rank", "worker"),
                      (0xA06,)),
    "workers": Stream("a worker process's global generators (random, numpy, torch)", ("worker",)),
    "model": Stream("the model's initial weights", ()),
    "synthetic": Stream("--synthetic batches", ()),
}
_NUMPY = ("plan", "resample", "source_order", "mix", "shuffle", "augment")  # the streams that are numpy generators


def generator(name: str, seed: int, *keys: int) -> np.random.Generator:
    """The numpy generator of stream `name` for `seed` and the stream's keys (`STREAMS[name].keys`, in order)."""
    stream = STREAMS[name]
    if name not in _NUMPY or len(keys) != len(stream.keys):
        raise TypeError(f"stream {name!r} is not a numpy generator keyed by {stream.keys}")
    return np.random.default_rng([seed, *keys, *stream.salt])


def caption_salt(seed: int, epoch: int) -> int:
    """The `caption` stream of an epoch: sample `key` with n captions gets caption
    `zlib.crc32(key.encode(), caption_salt(seed, epoch)) % n` (crc32 continues from the salt, so this is the crc32
    of "seed:epoch:key"; a sample's caption does not depend on where or by whom it is read)."""
    return zlib.crc32(f"{seed}:{epoch}:".encode())


def worker_seed(seed: int, worker: int) -> int:
    """The `workers` stream: the seed of worker process `worker`'s global generators (numpy takes it mod 2³²)."""
    return seed + worker


def torch_seed(name: str, seed: int) -> int:
    """The `model` and `synthetic` streams: the seed their torch generator is given."""
    if name not in ("model", "synthetic"):
        raise TypeError(f"stream {name!r} is not a torch seed")
    return seed
