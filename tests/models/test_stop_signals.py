"""Preemption: SIGTERM (SLURM, Kubernetes, cloud preemption) and SIGUSR1 (SLURM's warning before the kill) stop
`models.train` as Ctrl-C does: a checkpoint at the current step, one line, exit 128 + the signal. Sent for real
to a training subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import models

REPO = Path(models.__file__).parents[1]


def _wait_for_steps(metrics: Path, proc: subprocess.Popen, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout  # a bound for a stuck run, not a measurement
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"training did not reach step {n}: {proc.communicate()[1][-2000:]}")


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_exits_with_one_line(tmp_path, small_shards):
    signum = signal.SIGTERM
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "models.train", "--train-shards", str(small_shards), "--out", str(out), "--arch",
         "resnet18", "--no-pretrained", "--batch-size", "8", "--num-workers", "0", "--decode-threads", "1",
         "--log-every", "1", "--max-steps", "100000", "--checkpoint-every", "100000", "--quiet"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_steps(out / "metrics.jsonl", proc, 2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    lines = [line for line in err.strip().splitlines() if line.startswith("train:")]
    assert "Traceback" not in err and lines[-1].startswith(f"train: stopped by {name} at step "), err
    step = int(lines[-1].split(" at step ")[1].split(";")[0])
    assert f"checkpoint {out / 'latest.pt'}; resume with --resume {out}" in lines[-1]
    assert step >= 2 and torch.load(out / "latest.pt", weights_only=True)["step"] == step


def test_sigusr1_during_a_step_lands_after_it(tmp_path, small_shards, capsys, monkeypatch):
    """SIGUSR1 (SLURM's warning) takes the same handler: deferred to the end of the step, then a checkpoint."""
    import os

    import models.train as train_module

    real, calls = train_module.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step)
    out = tmp_path / "run"
    argv = ["--train-shards", str(small_shards), "--out", str(out), "--arch", "resnet18", "--no-pretrained",
            "--batch-size", "8", "--num-workers", "0", "--decode-threads", "1", "--max-steps", "6", "--quiet"]
    assert train_module.main(argv) == 128 + signal.SIGUSR1
    assert "train: stopped by SIGUSR1 at step 3; checkpoint" in capsys.readouterr().err
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handlers are the process's own again


def test_two_sigterms_back_to_back_save_the_step_and_say_so(tmp_path, small_shards, capsys, monkeypatch):
    """A wrapper that forwards TERM to its process group sends it twice: the second lands while the first one's
    checkpoint is being written. The checkpoint is written and the last line names it (it used to say "nothing was
    saved since the last checkpoint")."""
    import os

    import models.train as train_module
    from models.training.checkpoint import CheckpointWriter

    real_step, real_save, calls = train_module.train_step, CheckpointWriter.save, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the first, during step 3
        return real_step(*args, **kwargs)

    def save(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the second, while the checkpoint is written
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step)
    monkeypatch.setattr(CheckpointWriter, "save", save)
    out = tmp_path / "run"
    argv = ["--train-shards", str(small_shards), "--out", str(out), "--arch", "resnet18", "--no-pretrained",
            "--batch-size", "8", "--num-workers", "0", "--decode-threads", "1", "--max-steps", "6", "--quiet",
            "--checkpoint-every", "1000"]
    assert train_module.main(argv) == 128 + signal.SIGTERM
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"train: stopped by SIGTERM at step 3; checkpoint {out / 'latest.pt'}; resume with --resume {out}"
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 3


def _rank(rank: int, port: int, shards: Path, out: Path, *extra: str) -> subprocess.Popen:
    """One of two gloo ranks of `models.train`, launched as torchrun would (its environment variables)."""
    import os

    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
           "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "models.train", "--train-shards", str(shards), "--out", str(out), "--arch",
         "resnet18", "--no-pretrained", "--batch-size", "4", "--num-workers", "0", "--decode-threads", "1",
         "--log-every", "1", "--max-steps", "100000", "--device", "cpu", "--quiet", *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _train_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.strip().splitlines() if line.startswith("train:")]


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path, small_shards):
    """One node preempted: SIGTERM reaches rank 1 only. The ranks agree through the process group and stop after
    the same step; rank 0 writes the checkpoint of that step (rank 0 used to die in a gloo traceback)."""
    from tests.helpers import free_port

    out, port = tmp_path / "run", free_port()
    ranks = [_rank(r, port, small_shards, out, "--checkpoint-every", "100000") for r in (0, 1)]
    _wait_for_steps(out / "metrics.jsonl", ranks[0], 2)
    ranks[1].send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=120)[1] for p in ranks]
    assert [p.returncode for p in ranks] == [128 + signal.SIGTERM] * 2, errs
    last = [_train_lines(err)[-1] for err in errs]
    step = int(last[0].split(" at step ")[1].split(";")[0])
    assert last[0] == f"train: stopped by SIGTERM at step {step}; checkpoint {out / 'latest.pt'}; resume with " \
                      f"--resume {out}"
    assert last[1] == f"train: stopped by SIGTERM at step {step}"
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == step >= 2


@pytest.mark.slow
def test_a_rank_that_dies_breaks_the_group_in_one_line_and_the_last_checkpoint_is_kept(tmp_path, small_shards):
    """A rank killed outright (the OOM killer) gives no chance to agree: rank 0 says so in one line, exit 2, and
    the last checkpoint stays."""
    from tests.helpers import free_port

    out, port = tmp_path / "run", free_port()
    ranks = [_rank(r, port, small_shards, out, "--checkpoint-every", "1") for r in (0, 1)]
    _wait_for_steps(out / "metrics.jsonl", ranks[0], 2)
    ranks[1].kill()
    _, err = ranks[0].communicate(timeout=120)
    ranks[1].communicate(timeout=30)
    assert ranks[0].returncode == 2, err[-3000:]
    last = _train_lines(err)[-1]
    assert last.startswith("train: error: the process group broke at step ") and "another rank is gone" in last
    assert f"the last checkpoint, {out / 'latest.pt'}, is kept: resume with --resume {out}" in last
    assert torch.load(out / "latest.pt", weights_only=True)["step"] >= 2
