"""Checkpoints: nothing inside one runs, a bad file is named (or skipped for the newest good one), retention keeps
K + latest, and positions written before the loader had a state dict are converted to one."""

import logging
import pathlib

import pytest
import torch

from models.training.checkpoint import (
    CheckpointWriter,
    Position,
    legacy_loader_state,
    load_checkpoint,
)
from models.errors import CheckpointError, UnsafeCheckpoint
from models.runs.metrics_log import MetricsLog


class _Touch:
    """Unpickling this calls `Path.touch(target)`: what a hostile checkpoint could do."""

    def __init__(self, target: pathlib.Path) -> None:
        self.target = target

    def __reduce__(self):
        return pathlib.Path.touch, (self.target,)


def _state(step: int, **extra) -> dict:
    return {"model": {"w": torch.full((2,), float(step))}, "config": {"arch": "resnet18"}, "step": step, **extra}


def _crafted(path: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    torch.save(_state(1, payload=_Touch(target)), path)
    return path


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "created-by-the-pickle"
    evil = _crafted(tmp_path / "evil.pt", target)
    with pytest.raises(UnsafeCheckpoint, match="refused to load"):
        load_checkpoint(evil)
    run = tmp_path / "run"  # as a run folder's latest.pt, next to a good step file: refused, no fallback
    CheckpointWriter(run, keep=2).save(_state(1), step=1)
    (run / "latest.pt").unlink()
    _crafted(run / "latest.pt", target)
    with pytest.raises(UnsafeCheckpoint):
        load_checkpoint(run)
    assert not target.exists()
    torch.load(evil, weights_only=False)  # the payload is live: loading it the old way creates the file
    assert target.exists()


def test_crafted_weights_file_is_refused(tmp_path):
    from models import ImageEncoder

    target = tmp_path / "created-by-the-pickle"
    torch.save({"conv1.weight": _Touch(target)}, tmp_path / "w.pth")
    with pytest.raises(UnsafeCheckpoint, match="weights file"):
        ImageEncoder("resnet18", weights_path=str(tmp_path / "w.pth"))
    assert not target.exists()


def test_truncated_latest_falls_back_to_the_newest_good_step_file(tmp_path, caplog):
    run = tmp_path / "run"
    writer = CheckpointWriter(run, keep=3)
    for step in (1, 2, 3):
        writer.save(_state(step), step=step)
    data = (run / "latest.pt").read_bytes()
    (run / "latest.pt").unlink()  # a new file: the hard-linked step-00000003.pt stays intact
    (run / "latest.pt").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        state, path = load_checkpoint(run)
    assert state["step"] == 3 and path.name == "step-00000003.pt"
    assert "latest.pt" in caplog.text and "truncated or corrupt" in caplog.text
    with pytest.raises(CheckpointError, match=r"latest\.pt: not a readable checkpoint \(truncated or corrupt"):
        load_checkpoint(run / "latest.pt")  # named explicitly: no fallback, the file is named
    for p in run.glob("step-*.pt"):
        p.write_bytes(data[:100])
    with pytest.raises(CheckpointError, match="latest.pt"):  # nothing readable: the first failure is reported
        load_checkpoint(run)


def test_missing_checkpoints_say_so(tmp_path):
    with pytest.raises(CheckpointError, match="nothere: no such checkpoint"):
        load_checkpoint(tmp_path / "nothere")
    with pytest.raises(CheckpointError, match="no checkpoint in this folder"):
        load_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a models.train checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_writer_keeps_the_last_k_step_files_and_latest(tmp_path):
    writer = CheckpointWriter(tmp_path, keep=2)
    for step in range(1, 8):
        writer.save(_state(step), step=step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "step-00000006.pt", "step-00000007.pt"]
    assert torch.load(tmp_path / "latest.pt", weights_only=True)["step"] == 7
    writer.save(_state(3), step=3)  # a run resumed from step 3 replaces the later ones
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "step-00000003.pt"]
    only_latest = CheckpointWriter(tmp_path / "k0", keep=0)
    for step in (1, 2):
        only_latest.save(_state(step), step=step)
    assert [p.name for p in (tmp_path / "k0").iterdir()] == ["latest.pt"]


def test_positions_of_older_checkpoints_become_loader_state_dicts():
    """A loader state dict passes through; the positions written before it (samples per rank with the layout,
    or batches done with the layout in the config) become one segment of all ranks' samples."""
    current = {"epoch": 1, "segments": []}
    assert legacy_loader_state(_state(3, loader=current), world_size=2, n_samples=48, n_shards=5,
                               shuffle_buffer=1000) is current
    per_rank = _state(3, loader={"epoch": 1, "samples": 24, "seed": 0, "world_size": 2, "batch_size": 8,
                                 "num_workers": 0})
    batches = _state(3, loader={"epoch": 1, "batches_done": 3, "seed": 0})
    batches["config"].update(batch_size=8, seed=0, num_workers=0)
    for state, world in ((per_rank, 2), (batches, 1)):
        converted = legacy_loader_state(state, world_size=world, n_samples=48, n_shards=5, shuffle_buffer=1000)
        assert converted["epoch"] == 1 and converted["n_samples"] == 48 and converted["seed"] == 0
        assert converted["segments"] == [{"world_size": world, "workers": 1, "batch_size": 8, "drop_last": True,
                                          "shuffle_buffer": 1000, "samples": 24 * world}]
    with pytest.raises(CheckpointError, match="loader position is unreadable"):
        legacy_loader_state(_state(3, loader={"epoch": 1}), world_size=1, n_samples=48, n_shards=5,
                            shuffle_buffer=1000)
    per_rank["config"].update(crop="random", flip=True)  # one generator drew shuffle and crops: no exact replay
    with pytest.raises(CheckpointError, match="random crops or flips.*epoch boundary"):
        legacy_loader_state(per_rank, world_size=2, n_samples=48, n_shards=5, shuffle_buffer=1000)
    pos = Position(step=5, epoch=0, batches=5)
    pos.advance()
    pos.next_epoch()
    assert pos == Position(step=6, epoch=1, batches=0)


def test_metrics_log_keeps_only_records_up_to_the_start_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(f'{{"step": {s}, "loss": 1.0}}\n' for s in range(1, 7)) + '{"step": 7, "lo')
    log = MetricsLog(path, start_step=4)
    log.write({"step": 5, "loss": 0.5})
    log.close()
    import json

    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_a_full_disk_while_writing_a_checkpoint_is_one_error_and_leaves_no_tmp(tmp_path, monkeypatch):
    """torch reports the failed write as a bare RuntimeError and left a 63 MB `.tmp` on the full disk; the caption
    cache's mechanism (`shardgen.format.atomic`) makes it a CheckpointError (one line, exit 2), nothing left."""
    import shutil

    import torch as torch_module

    from models.training.checkpoint import CheckpointWriter
    from models.errors import CheckpointError

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"\0" * 1000)  # what a full disk lets through
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch_module, "save", save_on_a_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 100))
    writer = CheckpointWriter(tmp_path / "run", keep=2)
    with pytest.raises(CheckpointError, match="step-00000007.pt: cannot write the checkpoint .No space left"):
        writer.save({"weights": torch_module.zeros(1000)}, step=7)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []
