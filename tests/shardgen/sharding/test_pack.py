"""The packing stages on plain lists: shard rollover by count and by size, failures attributed to the shard after
them, trailing failures reported on their own."""

from pathlib import Path

import numpy as np

from shardgen.sources.record import ImageRecord
from shardgen.errors import BadImage
from shardgen.sharding.pack import Prepared, iter_shard_batches
from shardgen.format import Sample


def _record(i: int) -> ImageRecord:
    return ImageRecord(image_id=i, file_name=f"{i}.jpg", path=Path(f"{i}.jpg"), captions=("c",))


def _ok(i: int, jpg_bytes: int = 100, conversions: tuple[str, ...] = ()) -> Prepared:
    sample = Sample(f"{i:012d}", {"jpg": b"x" * jpg_bytes, "json": {"captions": ["c"]},
                                  "npy": np.zeros((1, 512), np.float16)})
    return Prepared(i, _record(i), sample, conversions)


def _bad(i: int, reason: str = "corrupt_image") -> Prepared:
    return Prepared(i, _record(i), BadImage(reason), ())


def _summary(batches):
    return [([s.key[-2:] for s in b.samples], b.input_end, b.failures, b.conversions) for b in batches]


def test_rollover_by_count_with_failures_attributed_to_the_next_shard():
    items = [_ok(0), _bad(1), _ok(2, conversions=("gray_to_rgb",)), _ok(3), _bad(4, "missing_file")]
    batches = list(iter_shard_batches(items, samples_per_shard=2, max_shard_bytes=10**9, input_end=5))
    assert _summary(batches) == [
        (["00", "02"], 3, {"corrupt_image": ["1.jpg"]}, {"gray_to_rgb": ["2.jpg"]}),
        (["03"], 5, {"missing_file": ["4.jpg"]}, {}),
    ]


def test_rollover_by_size_starts_a_new_shard_before_the_sample_that_would_overflow():
    per_sample = _ok(0).outcome.n_bytes
    items = [_ok(i) for i in range(5)]
    batches = list(iter_shard_batches(items, samples_per_shard=100, max_shard_bytes=2 * per_sample + 1,
                                      input_end=5))
    assert [len(b.samples) for b in batches] == [2, 2, 1]
    assert [b.input_end for b in batches] == [2, 4, 5]


def test_trailing_failures_after_a_full_shard_come_as_a_batch_without_samples():
    items = [_ok(0), _ok(1), _bad(2), _bad(3)]
    batches = list(iter_shard_batches(items, samples_per_shard=2, max_shard_bytes=10**9, input_end=4))
    assert _summary(batches)[-1] == ([], 4, {"corrupt_image": ["2.jpg", "3.jpg"]}, {})


def test_nothing_in_nothing_out():
    assert list(iter_shard_batches([], samples_per_shard=2, max_shard_bytes=10**9, input_end=0)) == []
