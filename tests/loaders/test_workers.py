"""The loader's worker processes: errors and deaths reach the caller, early stops, close, non-persistent mode."""

import os
import shutil
import signal

import pytest

from loaders import LoaderError, make_loader
from loaders.workers import WorkerError


def _keys(loader):
    return [k for b in loader for k in b["key"]]


def test_worker_errors_name_the_shard_and_key(tmp_path, train_shards, caplog):
    shutil.copytree(train_shards, tmp_path / "t")
    shard = tmp_path / "t" / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    loader = make_loader(str(tmp_path / "t"), batch_size=4, num_workers=2, shuffle=False)
    with pytest.raises(LoaderError, match=r"train-000002\.tar: \d{12}: corrupt or truncated"):
        _keys(loader)
    with pytest.raises(LoaderError, match=r"train-000002\.tar"):  # the workers survive and fail the same way
        _keys(loader)
    skipping = make_loader(str(tmp_path / "t"), batch_size=4, num_workers=2, shuffle=False, on_error="skip")
    batches = list(skipping)
    assert len(batches) == len(skipping) and sum(len(b["key"]) for b in batches) == 48


def test_a_killed_worker_is_reported_not_waited_for(train_shards):
    loader = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=1)
    it = iter(loader)
    next(it)
    os.kill(loader._pool.processes[1].pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match="worker 1 .* exited unexpectedly"):
        for _ in it:
            pass
    loader.close()
    assert len(_keys(loader)) == 48  # new workers after close


def test_early_stop_then_exact_epochs(train_shards):
    """Leaving an epoch early halts the workers; what they had prepared is dropped, later epochs are exact."""
    ref = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=7)
    loader = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=7)
    for epoch in (0, 1, 1):
        loader.set_epoch(epoch)
        for i, _ in enumerate(loader):
            if i == 2:
                break
        ref.set_epoch(epoch)
        loader.set_epoch(epoch)
        assert _keys(loader) == _keys(ref)


def test_close_and_non_persistent_workers(train_shards):
    loader = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=2)
    first = _keys(loader)
    processes = loader._pool.processes
    loader.close()
    assert loader._pool is None and not any(p.is_alive() for p in processes)
    loader.set_epoch(0)
    assert _keys(loader) == first
    once = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=2, persistent_workers=False)
    assert _keys(once) == first and once._pool is None
