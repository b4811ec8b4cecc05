"""Where a `ShardLoader`'s epoch stands: which epoch the next pass reads (set by the caller, advanced by itself,
or chosen by a resume), the samples and batches this rank handed out in the current pass, and the segments of
the epoch read before it (by other layouts, before a resume). `state_dict()` is made from these; a state dict
read back (`loaders.plan.resume`) sets them. The façade (`loader.py`) owns one and asks it."""

from __future__ import annotations

from collections.abc import Generator, Iterator

from ..plan.ranks import rank_batches
from ..plan.resume import EpochState, Resume, Segment, parse_state, plan_resume, shards_identity
from .stream import ShardStream


class Progress:
    """The counters and the resume of one loader (its `ShardStream` holds the selected epoch itself)."""

    def __init__(self, stream: ShardStream) -> None:
        self.stream, self.cfg = stream, stream.cfg
        self.explicit_epoch = False  # the caller chose epochs with set_epoch: passes no longer advance by themselves
        self.next_epoch = 0
        self.history: tuple[Segment, ...] = ()  # the epoch's segments before the one being read
        self.base = 0  # samples (all ranks) that segment consumed before the current pass
        self.yielded = self.batches = 0  # samples and batches this rank yielded in the current pass
        self.loaded = False  # a resume chose the next pass

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select `epoch` from `skip_batches` on (see `ShardLoader.set_epoch`)."""
        if self.loaded and epoch == self.stream.epoch and skip_batches == 0:
            return
        self.explicit_epoch = True
        self.loaded = False
        self.stream.set_epoch(epoch, skip_batches)
        self.history, self.base = (), self.stream.world_size * skip_batches * self.cfg.batch_size
        self.yielded = self.batches = 0

    def begin_pass(self) -> None:
        """A new iteration: the pass a resume chose, or the next epoch unless the caller sets epochs."""
        if self.loaded:
            self.loaded = False
        elif not self.explicit_epoch:
            self.set_epoch(self.next_epoch)
            self.explicit_epoch = False
            self.next_epoch += 1
        self.yielded = self.batches = 0

    def counted(self, batches: Iterator[dict]) -> Iterator[dict]:
        """`batches`, each counted as handed out; closing this closes them."""
        try:
            for batch in batches:
                self.batches += 1
                self.yielded += len(batch["key"])
                yield batch
        finally:
            if isinstance(batches, Generator):
                batches.close()

    def state_dict(self, *, batches: int | None = None) -> dict:
        """The state after the batches handed out, or after the first `batches` of them (see
        `ShardLoader.state_dict`)."""
        n = self.yielded
        if batches is not None:
            if not 0 <= batches <= self.batches:
                raise ValueError(f"batches={batches}: this pass has handed out {self.batches}")
            n = self.yielded if batches == self.batches else batches * self.cfg.batch_size
        return self.state(n)

    def state(self, n: int) -> dict:
        """The state after `n` samples per rank of the current pass."""
        segment = Segment(self.stream.pipeline.layout, self.base + self.stream.world_size * n)
        shards = self.stream.shards
        return EpochState(self.stream.epoch, self.cfg.seed, self.cfg.shuffle, self.cfg.resampled, shards.n_samples,
                          len(shards.urls), (*self.history, segment), shards_identity(shards)).as_dict()

    def plan(self, state: dict) -> Resume:
        """The rest of the epoch `state` describes, planned for this loader's layout. Raises StateError."""
        cfg, shards = self.cfg, self.stream.shards
        return plan_resume(parse_state(state), layout=self.stream.pipeline.layout, seed=cfg.seed,
                           shuffle=cfg.shuffle, resampled=cfg.resampled, n_samples=shards.n_samples,
                           n_shards=len(shards.urls), shards=shards_identity(shards))

    def resume(self, resume: Resume) -> None:
        """Make `resume` the next pass; epochs go on from there."""
        self.stream.resume(resume.epoch, resume.stream, resume.skip_batches)
        self.history, self.base = resume.history, resume.base
        self.yielded = self.batches = 0
        self.loaded, self.next_epoch = True, resume.epoch + 1

    @property
    def batches_in_pass(self) -> int:
        """Batches the next pass yields: a whole epoch's, fewer for the rest of one."""
        remaining = self.stream.pipeline.remaining if self.stream.resumed else None
        total = len(self.stream) if remaining is None else rank_batches(len(remaining), self.stream.pipeline.layout)
        return max(0, total - self.stream.skip_batches)
