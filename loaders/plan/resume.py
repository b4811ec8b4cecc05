"""The loader's state dict: where an epoch stands, in samples consumed by all ranks together, and enough of the
plans that consumed them to continue that epoch in another layout (world size, workers, batch size).

An epoch's state is a list of segments, one per layout it was read in: the first reads the epoch's whole stream
(`loaders.plan.ranks`); each later one reads the positions its predecessors did not see, in stream order, planned by
the same rules. A resume in the layout of the last segment continues that segment exactly, as if uninterrupted
(`skip_batches`); a resume in another layout starts a new segment. The dict holds plain ints, bools and lists
only, so it fits a checkpoint loaded with `torch.load(weights_only=True)`.

A state is checked before anything is planned from it (it comes from a file): every count a whole number within
bounds (`parse_state`), then against the shards it is loaded over (`plan_resume`): their count and identity (a
digest of the manifest's names and sha256s, `shards_identity`), no more producers (rank × worker) than samples,
no more samples than an epoch holds. A state without an identity (written before it had one) is accepted with a
warning when the counts match.
"""

from __future__ import annotations

import hashlib
import logging
import numbers
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from ..errors import StateError
from .ranks import Layout, rank_batches, rank_used, seen_positions
from .sources import MAX_EPOCH_SAMPLES, ShardSet

VERSION = 1
log = logging.getLogger("loaders")

# Bounds on what a state may hold whatever the shards (planning loops over ranks, workers and segments):
MAX_RANKS = 1 << 16
MAX_WORKERS = 1 << 10  # per rank
MAX_BATCH = 1 << 24
MAX_SEGMENTS = 1 << 8  # layouts one epoch was read in (each resume in another layout adds one)
MAX_EPOCH = 1 << 31
MAX_SEED = (1 << 64) - 1


def shards_identity(shards: ShardSet) -> str | None:
    """A digest of the shards' names and sha256s in order, from their manifest; None when the shards are not
    exactly the manifest's list (URLs given one by one, sizes.json): then only their counts can be compared.
    Several sources: a digest of each one's identity (or URLs and counts) and its quota."""
    if shards.parts:
        return hashlib.sha256("".join(
            f"{shards_identity(p) or [p.urls, p.counts]}\0{shards.quotas[i] if shards.quotas else '-'}\n"
            for i, p in enumerate(shards.parts)).encode()).hexdigest()
    manifest = shards.manifest
    if manifest is None or [u.rsplit("/", 1)[-1] for u in shards.urls] != [s.name for s in manifest.shards]:
        return None
    return hashlib.sha256("".join(f"{s.name}\0{s.sha256}\n" for s in manifest.shards).encode()).hexdigest()


@dataclass(frozen=True)
class Segment:
    """Part of an epoch read in one layout: `samples` consumed by all its ranks together (padding included)."""

    layout: Layout
    samples: int

    def as_dict(self) -> dict:
        return {**asdict(self.layout), "samples": self.samples}


@dataclass(frozen=True)
class EpochState:
    """What `ShardLoader.state_dict()` describes: the epoch, the plan's parameters, and its segments so far."""

    epoch: int
    seed: int
    shuffle: bool
    resampled: bool
    n_samples: int
    n_shards: int
    segments: tuple[Segment, ...] = ()
    shards: str | None = None  # `shards_identity` of the shards read

    @property
    def samples(self) -> int:
        """Samples of the epoch consumed by all ranks together."""
        return sum(s.samples for s in self.segments)

    def as_dict(self) -> dict:
        return {"version": VERSION, "epoch": self.epoch, "samples": self.samples, "seed": self.seed,
                "shuffle": self.shuffle, "resampled": self.resampled, "n_samples": self.n_samples,
                "n_shards": self.n_shards, "segments": [s.as_dict() for s in self.segments],
                **({"shards": self.shards} if self.shards is not None else {})}


def _whole(entry: dict, key: str, hi: int, lo: int = 0) -> int:
    """`entry[key]`, a whole number (not a bool, not a float such as inf) in lo..hi, else ValueError."""
    value = entry[key]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ValueError(f"{key} {value!r:.40} is not a whole number in {lo}..{hi}")
    return int(value)


def _flag(entry: dict, key: str) -> bool:
    value = entry[key]
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{key} {value!r:.40} is not true or false")
    return bool(value)


def parse_state(state: dict) -> EpochState:
    """An `EpochState` from `state_dict()`'s dict, every field checked to be of its type and within the bounds
    above. Raises StateError naming what is missing or malformed."""
    if not isinstance(state, dict) or not isinstance(state.get("segments"), list):  # one error type for all
        raise StateError("not a loader state dict (expected a dict with 'epoch', 'segments', ...)")  # noqa: TRY004
    try:
        if len(state["segments"]) > MAX_SEGMENTS:
            raise ValueError(f"{len(state['segments'])} segments, more than {MAX_SEGMENTS}")
        segments = []
        for s in state["segments"]:
            if not isinstance(s, dict):
                raise TypeError(f"segment {s!r:.40} is not a dict")
            layout = Layout(_whole(s, "world_size", MAX_RANKS, 1), _whole(s, "workers", MAX_WORKERS, 1),
                            _whole(s, "batch_size", MAX_BATCH, 1), _flag(s, "drop_last"),
                            _whole(s, "shuffle_buffer", MAX_BATCH))
            segments.append(Segment(layout, _whole(s, "samples", MAX_EPOCH_SAMPLES + MAX_RANKS)))
        identity = state.get("shards")
        if identity is not None and not (isinstance(identity, str) and len(identity) == 64):
            raise ValueError(f"shards {identity!r:.40} is not a shard set's digest")
        return EpochState(_whole(state, "epoch", MAX_EPOCH), _whole(state, "seed", MAX_SEED),
                          _flag(state, "shuffle"), _flag(state, "resampled"),
                          _whole(state, "n_samples", MAX_EPOCH_SAMPLES), _whole(state, "n_shards", MAX_EPOCH_SAMPLES),
                          tuple(segments), identity)
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"not a loader state dict ({type(exc).__name__}: {exc})") from None


def check_fits(saved: EpochState, *, n_samples: int, n_shards: int, shards: str | None) -> None:
    """`saved` is a state of these shards: the same counts and identity, layouts the shards allow (no more
    producers than samples), segments within an epoch. Raises StateError."""
    if (saved.n_samples, saved.n_shards) != (n_samples, n_shards):
        raise StateError(f"the loader state is of {saved.n_samples} samples in {saved.n_shards} shards; these shards "
                         f"hold {n_samples} in {n_shards}")
    if saved.shards is not None and shards is not None and saved.shards != shards:
        raise StateError("the loader state is of other shards (same counts, other contents: the folder was rebuilt "
                         "or holds another build, or the sets are mixed with other weights); continuing would read "
                         "another epoch")
    if saved.shards is None and shards is not None:
        log.warning("the loader state names no shard set (written by an older version): only the shards' counts "
                    "were checked")
    for segment in saved.segments:
        producers = segment.layout.world_size * segment.layout.workers  # the replay loops over them
        if producers > max(n_samples, 1):
            raise StateError(f"the loader state's layout {describe(segment.layout)} has more producers (ranks × "
                             f"workers) than these shards have samples ({n_samples})")
        if segment.samples >= n_samples + segment.layout.world_size * segment.layout.batch_size:
            raise StateError(f"the loader state's segment has consumed {segment.samples} samples, more than an "
                             f"epoch of {n_samples} holds")


class Resume(NamedTuple):
    """How a loader continues an epoch: `skip_batches` of the last segment's plan when the layout is the same,
    over `stream` (None: the whole epoch; else the positions not yet seen); `history` is the segments before the
    one it continues or starts, `base` what that one consumed already."""

    epoch: int
    skip_batches: int
    stream: np.ndarray | None
    history: tuple[Segment, ...]
    base: int


def plan_resume(saved: EpochState, *, layout: Layout, seed: int, shuffle: bool, resampled: bool, n_samples: int,
                n_shards: int, shards: str | None = None) -> Resume:
    """Where a loader with `layout` (and these plan parameters, over shards of this size and `shards_identity`)
    continues `saved`. Raises StateError when it cannot continue exactly (other data; mid-epoch, another seed or
    order)."""
    check_fits(saved, n_samples=n_samples, n_shards=n_shards, shards=shards)
    if not saved.segments or saved.samples == 0:
        return Resume(saved.epoch, 0, None, (), 0)
    before, last = saved.segments[:-1], saved.segments[-1]
    stream = remaining_stream(n_samples, before, seed=saved.seed, epoch=saved.epoch) if before else None
    n_stream = n_samples if stream is None else len(stream)
    world = last.layout.world_size
    if last.samples >= world * rank_used(n_stream, last.layout):  # the epoch is over: the next one, from its start
        return Resume(saved.epoch + 1, 0, None, (), 0)
    if (saved.seed, saved.shuffle, saved.resampled) != (seed, shuffle, resampled):
        raise StateError(f"the loader state is {saved.samples} samples into epoch {saved.epoch} read with seed "
                         f"{saved.seed}, shuffle={saved.shuffle}, resampled={saved.resampled}; this loader has seed "
                         f"{seed}, shuffle={shuffle}, resampled={resampled}: the rest of that epoch is another set")
    done, part = divmod(last.samples, world * last.layout.batch_size)
    if part:
        raise StateError(f"the loader state's last segment ends inside a batch ({last.samples} samples, "
                         f"{world} ranks × batch {last.layout.batch_size})")
    if last.layout == layout:
        return Resume(saved.epoch, done, stream, before, last.samples)
    if resampled:
        raise StateError("a resampled loader continues an epoch only with the same ranks, workers and batch size "
                         f"(saved: {describe(last.layout)}; now: {describe(layout)})")
    seen = seen_positions(np.arange(n_samples) if stream is None else stream, last.layout, rank_batches_done=done,
                          seed=saved.seed, epoch=saved.epoch)
    stream = np.arange(n_samples) if stream is None else stream
    return Resume(saved.epoch, 0, stream[~np.isin(stream, seen)], saved.segments, 0)


def remaining_stream(n_samples: int, segments: tuple[Segment, ...], *, seed: int, epoch: int) -> np.ndarray:
    """The epoch's stream positions not seen by `segments` (each read the previous one's remainder), in order."""
    stream = np.arange(n_samples)
    for segment in segments:
        done = segment.samples // (segment.layout.world_size * segment.layout.batch_size)
        if segment.samples >= segment.layout.world_size * rank_used(len(stream), segment.layout):
            done = rank_batches(len(stream), segment.layout)
        seen = seen_positions(stream, segment.layout, rank_batches_done=done, seed=seed, epoch=epoch)
        stream = stream[~np.isin(stream, seen)]
    return stream


def describe(layout: Layout) -> str:
    """'2 ranks × 4 workers × batch 32' (for messages)."""
    ranks = f"{layout.world_size} rank{'s' if layout.world_size != 1 else ''}"
    workers = f"{layout.workers} worker{'s' if layout.workers != 1 else ''}"
    return f"{ranks} × {workers} × batch {layout.batch_size}"
