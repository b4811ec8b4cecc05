"""The loader's state dict: where an epoch stands, in samples consumed by all ranks together, and enough of the
plans that consumed them to continue that epoch in another layout (world size, workers, batch size).

An epoch's state is a list of segments, one per layout it was read in: the first reads the epoch's whole stream
(`loaders.plan`); each later one reads the positions its predecessors did not see, in stream order, planned by
the same rules. A resume in the layout of the last segment continues that segment exactly, as if uninterrupted
(`skip_batches`); a resume in another layout starts a new segment. The dict holds plain ints, bools and lists
only, so it fits a checkpoint loaded with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from .errors import StateError
from .plan import Layout, rank_batches, rank_used, seen_positions

VERSION = 1


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

    @property
    def samples(self) -> int:
        """Samples of the epoch consumed by all ranks together."""
        return sum(s.samples for s in self.segments)

    def as_dict(self) -> dict:
        return {"version": VERSION, "epoch": self.epoch, "samples": self.samples, "seed": self.seed,
                "shuffle": self.shuffle, "resampled": self.resampled, "n_samples": self.n_samples,
                "n_shards": self.n_shards, "segments": [s.as_dict() for s in self.segments]}


def parse_state(state: dict) -> EpochState:
    """An `EpochState` from `state_dict()`'s dict. Raises StateError naming what is missing or malformed."""
    if not isinstance(state, dict) or not isinstance(state.get("segments"), list):  # one error type for all
        raise StateError("not a loader state dict (expected a dict with 'epoch', 'segments', ...)")  # noqa: TRY004
    try:
        segments = tuple(Segment(Layout(int(s["world_size"]), int(s["workers"]), int(s["batch_size"]),
                                        bool(s["drop_last"]), int(s["shuffle_buffer"])), int(s["samples"]))
                         for s in state["segments"])
        parsed = EpochState(int(state["epoch"]), int(state["seed"]), bool(state["shuffle"]),
                            bool(state["resampled"]), int(state["n_samples"]), int(state["n_shards"]), segments)
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"not a loader state dict ({type(exc).__name__}: {exc})") from None
    for s in segments:
        if min(s.layout.world_size, s.layout.workers, s.layout.batch_size) < 1 or s.samples < 0:
            raise StateError(f"loader state dict: impossible segment {s.as_dict()}")
    return parsed


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
                n_shards: int) -> Resume:
    """Where a loader with `layout` (and these plan parameters, over shards of this size) continues `saved`.
    Raises StateError when it cannot continue exactly (other data; mid-epoch, another seed or order)."""
    if (saved.n_samples, saved.n_shards) != (n_samples, n_shards):
        raise StateError(f"the loader state is of {saved.n_samples} samples in {saved.n_shards} shards; these shards "
                         f"hold {n_samples} in {n_shards}")
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
