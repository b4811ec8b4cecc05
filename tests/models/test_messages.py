"""Issue 14's first hour on the models side: the demo's "next:" command runs as printed and does what it says
(steps done = steps asked, at most K+1 checkpoints, the run folder with its curves), wrong paths are named with the
fix in one line (exit 2, no traceback), and the training curves and TensorBoard option work."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import models.runs.data as data_module
from models.runs import curves
from models.evaluate import main as evaluate
from models.runs.metrics_log import MetricsLog
from models.train import main as train
from shardgen.cli.hints import python_command

from ..helpers import lying_manifest, malformed_manifest, one_line

ROOT = Path(__file__).resolve().parents[2]


def _demo():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, small_shards) -> Path:
    """The demo's printed next command, run from a folder laid out like the demo's output (small shards for
    both splits), with a shorter run appended (argparse: the last value wins)."""
    where = tmp_path_factory.mktemp("demo")
    (where / "demo_out" / "shards").mkdir(parents=True)
    for split in ("train", "val"):
        (where / "demo_out" / "shards" / split).symlink_to(small_shards)
    before = Path.cwd()
    os.chdir(where)  # the line is printed for the folder the demo ran in, and run there
    try:
        line = _demo().next_command(python_command(), Path("demo_out"))
    finally:
        os.chdir(before)
    argv = [*shlex.split(line), "--batch-size", "8", "--max-steps", "7", "--checkpoint-every", "3",
            "--keep-checkpoints", "1", "--log-every", "1", "--quiet"]
    done = subprocess.run(argv, cwd=where, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return where / "demo_out" / "run"


@pytest.mark.slow
def test_the_demos_next_command_runs_as_printed_and_keeps_k_plus_1_checkpoints(demo_run):
    steps = [json.loads(line)["step"] for line in (demo_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 8)) and json.loads((demo_run / "params.json").read_text())["total_steps"] == 7
    assert sorted(p.name for p in demo_run.glob("*.pt")) == ["latest.pt", "step-00000007.pt"]  # K=1: K+1 files
    assert "train: 7 steps" in (demo_run / "train.log").read_text()
    assert list(demo_run.glob("eval-*.json"))  # --val-shards: evaluated at the end
    with Image.open(demo_run / "curves.png") as img:
        assert img.size[0] > 600 and img.size[1] > 400


@pytest.mark.slow
def test_the_curves_show_what_the_run_logged(demo_run):
    c = curves.read_curves(demo_run)
    assert c.steps == list(range(1, 8)) and len(c.loss) == len(c.lr_head) == len(c.temperature) == 7
    assert all(0 < t < 1 for t in c.temperature)  # 1 / logit scale, initialized at 0.07
    assert c.lr_head[-1] < max(c.lr_head)  # cosine decay
    assert {label.split()[0] for label in c.recall} == {"text→image", "image→text"}
    assert all(points[-1][0] == 7 for points in c.recall.values())


def test_curves_are_redrawn_from_the_files(tmp_path):
    records = [{"step": s, "loss": 4.0 - s / 10, "lr_head": 1e-3, "lr_trunk": 1e-4, "logit_scale": 14.0 + s}
               for s in range(1, 11)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 11, "lo')
    assert curves.write_curves(tmp_path) == tmp_path / "curves.png"
    (tmp_path / "eval-val-abc123.json").write_text(json.dumps({"step": 10, "text_to_image_R@5": 0.5}))
    c = curves.read_curves(tmp_path)
    assert c.steps == list(range(1, 11)) and c.recall == {"text→image R@5": [(10, 0.5)]}  # torn line skipped
    assert curves.write_curves(tmp_path / "empty") is None


def test_tensorboard_missing_is_one_note_and_training_logs_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    log = MetricsLog(tmp_path / "metrics.jsonl", start_step=0, tensorboard=True)
    log.write({"step": 1, "loss": 1.0})
    log.close()
    assert "pip install tensorboard" in one_line(capsys.readouterr().err)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1 and not (tmp_path / "tensorboard").exists()


def test_tensorboard_gets_the_records(tmp_path):
    pytest.importorskip("tensorboard")
    log = MetricsLog(tmp_path / "metrics.jsonl", start_step=0, tensorboard=True)
    log.write({"step": 1, "loss": 1.5, "lr_head": 1e-3})
    log.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_a_shard_folder_that_does_not_exist_is_named(tmp_path, capsys):
    assert train(["--train-shards", str(tmp_path / "nothere"), "--out", str(tmp_path / "run")]) == 2
    assert "nothere: no such folder" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_the_parent_of_the_split_folders_names_them(tmp_path, small_shards, tiny_run, capsys):
    (tmp_path / "train").symlink_to(small_shards)
    (tmp_path / "val").symlink_to(small_shards)
    assert train(["--train-shards", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "holds the shard folders train, val, not shards: give one of them" in one_line(capsys.readouterr().err)
    assert evaluate(["--checkpoint", str(tiny_run), "--shards", str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert "holds the shard folders train, val" in one_line(capsys.readouterr().err)


def test_a_checkpoint_that_does_not_exist_is_named(tmp_path, small_shards, capsys):
    assert evaluate(["--checkpoint", str(tmp_path / "nothere"), "--shards", str(small_shards)]) == 2
    assert "nothere: no such checkpoint (give a checkpoint file or a training --out folder)" in \
        one_line(capsys.readouterr().err)


@pytest.mark.parametrize("corrupt", [malformed_manifest, lying_manifest])
def test_a_malformed_or_lying_manifest_is_one_line_exit_2_from_train_and_evaluate(tmp_path, small_shards, tiny_run,
                                                                                 capsys, corrupt):
    shards = corrupt(small_shards, tmp_path / "train")
    argv = ["--train-shards", str(shards), "--out", str(tmp_path / "run"), "--arch", "resnet18", "--no-pretrained",
            "--batch-size", "8", "--num-workers", "0", "--epochs", "1", "--quiet"]
    assert train(argv) == 2
    err = capsys.readouterr().err  # a lie is met mid-epoch: after the run's start line, one line says it
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("train: error: ") and str(shards) in lines[-1], err
    assert all(not line.startswith("train: error") for line in lines[:-1]), err
    assert evaluate(["--checkpoint", str(tiny_run), "--shards", str(shards), "--out", str(tmp_path / "e")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("evaluate: error: ") and str(shards) in line
    assert not list((tmp_path / "e").glob("eval-*.json"))


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_bug_while_opening_the_shards_keeps_its_traceback(tmp_path, small_shards, tiny_run, monkeypatch, command):
    """Only the loader's SourceError becomes a one-line "cannot use these shards"; a ValueError is a bug."""
    def buggy(*args, **kwargs):
        raise ValueError("a bug, not a bad source")

    monkeypatch.setattr(data_module, "make_loader", buggy)  # both commands open shards there
    argv = ["--train-shards", str(small_shards), "--out", str(tmp_path / "run"), "--num-workers", "0"] \
        if command == "train" else ["--checkpoint", str(tiny_run), "--shards", str(small_shards)]
    with pytest.raises(ValueError, match="a bug, not a bad source"):
        (train if command == "train" else evaluate)(argv)
