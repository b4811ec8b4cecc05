"""The benchmarks' own probes do the work they report (timings themselves are `make bench`'s business)."""

from __future__ import annotations

import pytest

from tests.conftest import N_TRAIN


@pytest.mark.parametrize("mode", ["bytes, one buffer", "mapped shards, batch slots"])
def test_decode_probe_decodes_every_stored_jpeg_per_pass(train_shards, mode):
    from benchmarks.decode_ceiling import decode_in_processes

    urls = sorted(str(p) for p in train_shards.glob("train-*.tar"))
    n, seconds = decode_in_processes(urls, processes=2, mode=mode, passes=2, batch=8)
    assert n == 2 * N_TRAIN
    assert seconds > 0


def test_floor_decodes_every_stored_jpeg(train_shards):
    from benchmarks.loader import decode_floor, stored_jpegs

    jpgs = stored_jpegs(sorted(str(p) for p in train_shards.glob("train-*.tar")))
    assert len(jpgs) == N_TRAIN
    assert decode_floor(jpgs, threads=2) == N_TRAIN
