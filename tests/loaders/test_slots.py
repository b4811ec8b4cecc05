"""The slot ring's hand-over rule under a concurrent writer: a worker never takes a slot the main process holds,
whatever moment the main process takes it at."""

from __future__ import annotations

import numpy as np

from loaders.handover.slots import SlotRing


def test_a_slot_the_main_process_takes_while_a_worker_looks_is_not_handed_out():
    """The main process turns a slot from `generation` (sent) to -1 (held) while the worker looks for a free one;
    neither value is free. Reading a cell twice (`> 0`, then `< generation - 1`) could see 3, then -1, and hand
    out a held slot: a kept batch's pixels overwritten (seen once in ~50 epochs of 75 batches with 2 workers).
    Here the main process takes the slot right after the worker's first comparison, every time."""
    ring = SlotRing(1, 3, (1, 2, 2, 3), 4)
    pixels, embeddings, state = ring.arrays()
    state[0, :] = [-1, -1, 3]  # held, held, sent in generation 3 and about to be taken

    class TakenAfterTheFirstLook(np.ndarray):
        def __gt__(self, other):
            seen = np.ndarray.__gt__(self, other)
            state[0, 2] = -1  # the main process takes slot 2 (writes the shared array, not a worker's copy)
            return seen

    ring._np = (pixels, embeddings, state.view(TakenAfterTheFirstLook))
    assert ring.acquire(0, 3) is None


def test_free_and_left_over_slots_are_handed_out():
    ring = SlotRing(1, 4, (1, 2, 2, 3), 4)
    state = ring.arrays()[2]
    state[0, :] = [-1, 4, 1, 0]  # held, sent in the previous generation, left over from an older one, free
    assert ring.acquire(0, 5)[0] == 2 and ring.acquire(0, 5)[0] == 3 and ring.acquire(0, 5) is None
