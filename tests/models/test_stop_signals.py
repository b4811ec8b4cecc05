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
