"""The loader's worker processes: errors and deaths reach the caller, early stops, close, non-persistent mode."""

import multiprocessing
import os
import shutil
import signal

import pytest

from loaders import LoaderError, SourceError, WorkerError, make_loader
from shardgen.format.errors import DataError, SchemaError, UserError, exit_code


def _keys(loader):
    return [k for b in loader for k in b["key"]]


def test_worker_errors_name_the_shard_and_key(tmp_path, train_shards, caplog):
    shutil.copytree(train_shards, tmp_path / "t")
    shard = tmp_path / "t" / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    loader = make_loader(str(tmp_path / "t"), batch_size=4, num_workers=2, shuffle=False)
    # where a worker's span starts inside the shard it seeks through the shard's index: the message names the
    # sample by its place in the index instead of its key
    with pytest.raises(LoaderError, match=r"train-000002\.tar: (\d{12}|byte \d+ \(sample \d+ by \S+\.idx\)): "
                                          r"corrupt or truncated"):
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
    os.kill(loader._workers.pool.processes[1].pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match="worker 1 .* exited unexpectedly"):
        for _ in it:
            pass
    assert len(_keys(loader)) == 48  # the next epoch starts new workers


def test_ctrl_c_stops_the_loop_not_the_workers(train_shards):
    """Ctrl-C reaches the whole process group: the training loop stops, the workers ignore it and serve the next
    loop (as when a notebook cell is interrupted and run again)."""
    # Python turns SIGINT into KeyboardInterrupt only when it started with SIGINT at its default: a suite run in
    # the background of a non-interactive shell (`make test &`, a CI runner) inherits it ignored. Here SIGINT
    # gets the handler an interactive session has.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_stops_the_loop_not_the_workers(train_shards)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_stops_the_loop_not_the_workers(train_shards) -> None:
    loader = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=1)
    ref = _keys(loader)
    processes = loader._workers.pool.processes
    loader.set_epoch(0)
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(loader):
            if i == 1:
                for p in processes:
                    os.kill(p.pid, signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
    assert all(p.is_alive() for p in processes)
    loader.set_epoch(0)
    assert _keys(loader) == ref and loader._workers.pool.processes == processes


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
    processes = loader._workers.pool.processes
    loader.close()
    assert loader._workers.pool is None and not any(p.is_alive() for p in processes)
    loader.set_epoch(0)
    assert _keys(loader) == first
    once = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=2, persistent_workers=False)
    assert _keys(once) == first and once._workers.pool is None


@pytest.mark.slow
def test_next_epoch_started_early_never_overwrites_batches_on_their_way(train_shards):
    """Workers go on with the next epoch as soon as their share of one ends, while their last batches may still be
    waiting to be taken: those slots must not be reused. A slow caller leaves them waiting; every image is
    checked. Then an epoch other than the guessed one, and a resume, still come out exactly."""
    import time

    from .test_stream import _check_against_shards, read_all

    truth = dict(read_all(train_shards))
    loader = make_loader(str(train_shards), batch_size=4, num_workers=2, prefetch_factor=1, seed=11)
    ref = make_loader(str(train_shards), batch_size=4, num_workers=2, prefetch_factor=1, seed=11,
                      persistent_workers=False)  # no guessing
    for epoch in range(4):
        keys = []
        for i, batch in enumerate(loader):
            if i >= len(loader) - 4:
                time.sleep(0.1)  # the workers are done with this epoch and start the next one meanwhile
            for key, image, emb in zip(batch["key"], batch["image"], batch["text_embedding"]):
                _check_against_shards(truth, key, image, emb)
            keys += batch["key"]
        ref.set_epoch(epoch)
        assert keys == _keys(ref)
    for epoch, skip in ((7, 0), (8, 2), (9, 0)):  # not the guess; a resume; the guess again
        loader.set_epoch(epoch, skip_batches=skip)
        ref.set_epoch(epoch)
        assert _keys(loader) == _keys(ref)[4 * skip:]


def test_worker_rotation_keeps_dataloaders_order(train_shards):
    """Which worker makes the larger share changes every epoch; the batches and their order stay those a plain
    DataLoader with as many workers gives over the same dataset."""
    from torch.utils.data import DataLoader

    loader = make_loader(str(train_shards), batch_size=5, num_workers=2, seed=3)
    plain = make_loader(str(train_shards), batch_size=5, num_workers=2, seed=3).dataset
    for epoch in range(3):
        loader.set_epoch(epoch)
        plain.set_epoch(epoch)
        batches = DataLoader(plain, batch_size=None, num_workers=2)
        assert _keys(loader) == [k for b in batches for k in b["key"]]


class _TwoArgs(UserError):
    def __init__(self, reason: str, message: str) -> None:  # does not survive pickling as itself
        super().__init__(message)
        self.reason = reason


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the patch reaches workers by fork")
@pytest.mark.parametrize("error", [SchemaError("x.tar: 000000000001: bad field"),
                                   SourceError("s3://k:secret@b/x.tar: access denied"),
                                   _TwoArgs("denied", "x.tar: refused")])
def test_a_worker_error_of_the_family_keeps_its_type_as_without_workers(train_shards, monkeypatch, error):
    """Not only LoaderError: any DataError or UserError raised in a worker reaches the caller as it does with
    num_workers=0 (one line, exit 2), not as a WorkerError with a traceback."""
    from loaders.handover.epoch import EpochPipeline

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(EpochPipeline, "iter_records", fail)
    family = DataError if isinstance(error, DataError) else UserError
    for workers in (0, 2):
        with pytest.raises(family) as info:
            _keys(make_loader(str(train_shards), batch_size=4, num_workers=workers, shuffle=False))
        assert str(info.value) == str(error) and "secret" not in str(info.value)
        assert isinstance(info.value, type(error)) or type(error) is _TwoArgs
        assert exit_code(info.value) == 2
