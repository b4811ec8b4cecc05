"""A training run's logs: `metrics.jsonl` (one JSON record per logged step) and `train.log` (the lines printed at
start, resume and end), plus the meter behind the records' samples/s and data-wait share.

A run that starts at step N (0 for a fresh run, the checkpoint's step on resume) keeps only the records up to N:
later ones belong to steps it is about to redo, so no step appears twice.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

from shardgen.format import open_append, printable_name, redact, write_text_atomic

T = TypeVar("T")


class MetricsLog:
    """`metrics.jsonl`, and with `tensorboard` the same records as TensorBoard scalars in `tensorboard/` next to it."""

    def __init__(self, path: Path, *, start_step: int, tensorboard: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = _records_up_to(path, start_step) if path.is_file() else []
        write_text_atomic(path, "".join(line + "\n" for line in kept))
        self.file = open_append(path)  # closed by close()
        self.tensorboard = None
        if tensorboard:
            from .curves import TENSORBOARD_DIR, open_tensorboard

            self.tensorboard = open_tensorboard(path.parent / TENSORBOARD_DIR, purge_step=start_step + 1)

    def write(self, record: dict) -> None:
        self.file.write((json.dumps(record) + "\n").encode())
        self.file.flush()
        if self.tensorboard is not None:
            from .curves import log_scalars

            log_scalars(self.tensorboard, record)

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _records_up_to(path: Path, step: int) -> list[str]:
    """The lines of `path` whose record's step is <= `step`; a torn last line (a killed run) is dropped."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    return kept


class RunLog:
    """Lines for the person running training: printed to stderr and appended to `train.log` in the run folder
    (a link there is refused), without passwords or control characters."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def say(self, line: str) -> None:
        line = printable_name(redact(line))
        print(line, file=sys.stderr)
        self.record(line)

    def record(self, line: str) -> None:
        """`line` in train.log only (a line printed to stderr elsewhere)."""
        if self.path is not None:
            with open_append(self.path) as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n".encode())


class Reading(NamedTuple):
    samples_per_s: float
    data_wait: float  # share of the wall time the loop waited for its next batch, 0..1


class Throughput:
    """Samples per second and the data-wait share since the previous reading.

    The wait is the host's wall time inside `next()` on the batch iterator (`timed` wraps it); the rest is the
    step. Both are wall time between batch arrivals, measured without a device sync: on CUDA the step only queues
    work, and the host is held back once the device's queue is full, so a GPU that is the bottleneck shows a wait
    near 0, and a loader that is the bottleneck shows the share of the time the GPU had nothing queued. The share
    can overstate the GPU's idle time by the work still queued when the wait began (at most a step or two).
    `clock` (seconds; default `time.perf_counter`) is there for tests, which drive it by hand.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.t0, self.n, self.waited = clock(), 0, 0.0

    def add(self, n: int) -> None:
        self.n += n

    def timed(self, batches: Iterable[T]) -> Iterator[T]:
        """Yield from `batches`, adding the time spent waiting for each to the data wait."""
        it = iter(batches)
        try:
            while True:
                t = self.clock()
                try:
                    batch = next(it)
                except StopIteration:
                    return
                self.waited += self.clock() - t
                yield batch
        finally:  # the caller stopped early: stop the source too (a loader's epoch, its prefetch)
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def read(self) -> Reading:
        now = self.clock()
        elapsed = max(now - self.t0, 1e-9)
        reading = Reading(self.n / elapsed, min(1.0, self.waited / elapsed))
        self.t0, self.n, self.waited = now, 0, 0.0
        return reading
