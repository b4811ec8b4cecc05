"""The shard task on its own: it reads its captions' rows from the cache's files, and refuses files that are not
the ones its range was planned with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardgen.config import BuildConfig
from shardgen.errors import UserError
from shardgen.sharding.shardtask import CacheFiles, ShardTask, _read_rows
from shardgen.sources.listing import Listing
from shardgen.sources.record import ImageRecord


def _task(tmp_path: Path, order: np.ndarray, rows: np.ndarray, first_caption: int) -> ShardTask:
    listing = Listing.from_records([ImageRecord(1, "a.jpg", tmp_path / "a.jpg", ("x", "y")),
                                    ImageRecord(2, "b.jpg", tmp_path / "b.jpg", ("z",))])
    np.save(tmp_path / "order.npy", order)
    np.save(tmp_path / "rows.npy", rows)
    cfg = BuildConfig(coco_root=tmp_path, split="val", out=tmp_path / "o")
    return ShardTask(0, 0, listing, None, str(tmp_path / "o"), cfg,
                     CacheFiles(str(tmp_path / "rows.npy"), str(tmp_path / "order.npy")), first_caption)


def test_a_task_reads_the_rows_of_its_own_captions(tmp_path):
    rows = np.arange(10, dtype=np.float16).reshape(5, 2)
    got = _read_rows(_task(tmp_path, np.array([4, 0, 3, 1, 2]), rows, first_caption=1))
    assert np.array_equal(got, rows[[0, 3, 1]])


@pytest.mark.parametrize("order", [np.array([0, 1]), np.array([0, 1, 9])], ids=["short", "past-the-rows"])
def test_cache_files_that_changed_under_the_build_are_one_line(tmp_path, order):
    with pytest.raises(UserError, match="the caption cache changed under this build .* records 0..1"):
        _read_rows(_task(tmp_path, order, np.zeros((5, 2), np.float16), first_caption=0))
