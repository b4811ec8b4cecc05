from collections import Counter

import pytest

from loaders.plan.ranks import batches_per_rank, plan_worker


def _cover(counts, world, workers, batch, epoch=0, drop_last=False):
    seen = Counter()
    batches_by_rank = []
    for rank in range(world):
        n_batches = 0
        for w in range(workers):
            spans, sizes = plan_worker(counts, rank=rank, world_size=world, worker=w, num_workers=workers,
                                       batch_size=batch, seed=3, epoch=epoch, drop_last=drop_last)
            assert sum(len(s) for s in spans) == sum(sizes)
            assert all(b == batch for b in sizes[:-1])
            n_batches += len(sizes)
            for s in spans:
                seen.update((s.shard, i) for i in range(s.start, s.stop))
        batches_by_rank.append(n_batches)
    return seen, batches_by_rank


@pytest.mark.parametrize("counts,world,workers,batch", [
    ([10, 10, 10, 10, 8], 2, 2, 4), ([1000] * 82 + [783], 8, 8, 64), ([7, 3, 9], 3, 1, 5), ([5] * 4, 1, 4, 3),
])
def test_every_sample_once_and_equal_batches(counts, world, workers, batch):
    seen, per_rank = _cover(counts, world, workers, batch)
    n = sum(counts)
    assert len(set(per_rank)) == 1 and per_rank[0] == batches_per_rank(n, world_size=world, batch_size=batch)
    assert set(seen) == {(s, i) for s, c in enumerate(counts) for i in range(c)}  # every sample
    padding = sum(seen.values()) - n
    assert padding == -n % world and all(v <= 2 for v in seen.values())  # only DistributedSampler-style padding


def test_drop_last_never_duplicates():
    seen, per_rank = _cover([10, 10, 10, 10, 8], 2, 2, 4, drop_last=True)
    assert max(seen.values()) == 1 and per_rank == [6, 6]


def test_assignment_changes_with_epoch():
    a = plan_worker([10] * 8, rank=0, world_size=2, worker=0, num_workers=2, batch_size=4, seed=0, epoch=0)
    b = plan_worker([10] * 8, rank=0, world_size=2, worker=0, num_workers=2, batch_size=4, seed=0, epoch=1)
    c = plan_worker([10] * 8, rank=0, world_size=2, worker=0, num_workers=2, batch_size=4, seed=0, epoch=0)
    assert a != b and a == c
