"""Stage 2 on its own, with lists: the shuffle buffer gives every item once, in an order that is a function of
its generator alone, and `Taker` cuts a stream of lists into batches across the lists' boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from loaders.plan.shuffle import Taker, iter_shuffled


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def test_taker_cuts_across_list_boundaries():
    taker = Taker(iter(_chunks(10, 3)))  # [0,1,2] [3,4,5] [6,7,8] [9]
    assert taker.take(2) == [0, 1]
    assert taker.take(4) == [2, 3, 4, 5]
    assert taker.take(1) == [6]
    assert taker.take(5) == [7, 8, 9]  # fewer at the end of the stream
    assert taker.take(3) == [] and taker.take(1) == []


def test_taker_over_empty_lists_and_an_empty_stream():
    assert Taker(iter([[], [1], [], [2, 3]])).take(3) == [1, 2, 3]
    assert Taker(iter([])).take(4) == []


@pytest.mark.parametrize("size", [0, 1, 8, 100, 1000])
def test_the_shuffle_buffer_gives_every_item_once(size):
    out = [x for chunk in iter_shuffled(iter(_chunks(300, 7)), size=size, rng=np.random.default_rng(1))
           for x in chunk]
    assert sorted(out) == list(range(300))
    if size <= 1:
        assert out == list(range(300))  # no shuffling
    else:
        assert out != list(range(300))


def test_the_order_depends_on_the_generator_and_the_items_alone():
    def order(seed, chunk):
        return [x for c in iter_shuffled(iter(_chunks(200, chunk)), size=50, rng=np.random.default_rng(seed))
                for x in c]

    assert order(3, 7) == order(3, 7) == order(3, 13)  # how the items are cut into lists changes nothing
    assert order(3, 7) != order(4, 7)


def test_the_buffer_starts_yielding_before_it_is_full():
    first = next(iter_shuffled(iter(_chunks(1000, 100)), size=500, rng=np.random.default_rng(0)))
    assert 0 < len(first) <= 100 and max(first) < 100  # from the first list read, not after 500 items
