"""Stage 2: a shuffle buffer over lists of records, and `Taker`, which cuts a stream of lists into batches.

Records travel in lists (one per read window, ~200 samples of 224 px) rather than one at a time: each generator
step costs ~0.2 µs a layer per item, and the tar reader hands out whole windows anyway.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def iter_shuffled(chunks: Iterator[list], *, size: int, rng: np.random.Generator) -> Iterator[list]:
    """A shuffle buffer of `size` items that starts yielding at a tenth of that and fills up while reading two
    items per item yielded (webdataset's `initial` rule: the first batch does not wait for a full buffer). Takes
    and gives lists; every item comes out exactly once. `size` ≤ 1: no shuffling."""
    if size <= 1:
        yield from chunks
        return
    initial = max(1, size // 10)
    buf: list = []
    draws: list[float] = []
    hold = False
    for chunk in chunks:
        out = []
        for item in chunk:
            buf.append(item)
            if len(buf) < size:
                hold = not hold
                if hold:  # filling: one yielded per two read
                    continue
            if len(buf) >= initial:
                if not draws:
                    draws = rng.random(256).tolist()
                j = int(draws.pop() * len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                out.append(buf.pop())
        if out:
            yield out
    order = rng.permutation(len(buf)).tolist()
    yield [buf[j] for j in order]


class Taker:
    """Items n at a time from a stream of lists."""

    def __init__(self, chunks: Iterator[list]) -> None:
        self.chunks, self.buf, self.pos = chunks, [], 0

    def take(self, n: int) -> list:
        """The next n items (fewer at the end of the stream)."""
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        while len(out) < n:
            self.buf = next(self.chunks, None)
            if self.buf is None:
                self.buf, self.pos = [], 0
                break
            self.pos = n - len(out)
            out += self.buf[:self.pos]
        return out
