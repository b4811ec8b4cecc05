"""The whole run checked before its first step, and the multi-GPU case that used to die in its last one: a real
`torchrun` (2 processes, gloo) with a 1-shard val set ends with its summary and an evaluation of every val image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.train import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def one_val_shard(sample_shards) -> Path:
    """The sample's 12 val images at 64 px in one shard."""
    return sample_shards("val", image_size=64, samples_per_shard=100)


def _args(train, out, *extra) -> list[str]:
    return ["--train-shards", str(train), "--out", str(out), "--arch", "resnet18", "--no-pretrained",
            "--batch-size", "8", "--decode-threads", "1", "--quiet", *map(str, extra)]


@pytest.mark.slow
def test_torchrun_two_processes_one_val_shard_ends_with_summary_and_evaluation(tmp_path, small_shards,
                                                                               one_val_shard):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "models.train", *_args(small_shards, out, "--val-shards", one_val_shard, "--max-steps", 2,
                                  "--num-workers", 1, "--device", "cpu")]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout[done.stdout.index("{"):]
    summary, end = json.JSONDecoder().raw_decode(text)
    assert not text[end:].strip()  # one summary, rank 0's
    assert summary["steps"] == 2 and summary["eval"]["n_images"] == 12  # every val image, not rank 0's half
    assert list(out.glob("eval-val-*.json")) and (out / "curves.png").is_file()


def test_bad_val_shards_stop_the_run_before_its_first_step(tmp_path, small_shards, capsys):
    out = tmp_path / "run"
    assert main(_args(small_shards, out, "--val-shards", tmp_path / "nope", "--max-steps", 1,
                      "--num-workers", 0)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"train: error: --val-shards {tmp_path / 'nope'}: ") and len(err.splitlines()) == 1
    assert "--shards" not in err.replace("--val-shards", "")
    assert not list(out.glob("*.pt")) and not (out / "metrics.jsonl").exists()


def test_an_out_that_is_a_file_is_refused_naming_the_flag(tmp_path, small_shards, capsys):
    (tmp_path / "run").write_text("not a folder")
    assert main(_args(small_shards, tmp_path / "run", "--max-steps", 1, "--num-workers", 0)) == 2
    assert capsys.readouterr().err.strip() == f"train: error: --out {tmp_path / 'run'}: is a file, not a folder; " \
                                              "choose another --out"


@pytest.mark.slow
def test_training_on_evaluation_data_warns_in_one_line_and_runs(tmp_path, small_shards, one_val_shard, capsys):
    out = tmp_path / "run"
    assert main(_args(one_val_shard, out, "--val-shards", one_val_shard, "--max-steps", 1, "--num-workers", 0)) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "train: warning: 1 of the 1 --val-shards files are --train-shards files: the evaluation measures memory, "
        "not retrieval",
        "train: warning: --train-shards holds split 'val' by its manifest: training on evaluation data makes its "
        "Recall@K meaningless"]
    from models.evaluate import main as evaluate

    assert evaluate(["--checkpoint", str(out), "--shards", str(one_val_shard), "--show-images", "0"]) == 0
    assert capsys.readouterr().err.strip() == (
        f"warning: 1 of the 1 --shards files are this checkpoint's own training shards ({one_val_shard}): "
        "Recall@K here measures memory, not retrieval")
    assert evaluate(["--checkpoint", str(out), "--shards", str(small_shards), "--show-images", "0"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_distinct_train_and_val_sets_give_no_warning(small_shards, one_val_shard):
    from models.runs.preflight import data_warnings, held_out_split
    from shardgen.format import read_manifest

    train = read_manifest(str(small_shards))
    urls = [str(small_shards / s.name) for s in train.shards]
    assert data_warnings(train_urls=urls, train_manifest=train, val_urls=[str(one_val_shard / "val-000000.tar")]) == []
    same = [str(small_shards / ".." / small_shards.name / s.name) for s in train.shards[:2]]  # another spelling
    assert data_warnings(train_urls=urls, train_manifest=train, val_urls=same)[0].startswith("2 of the 2 ")
    assert held_out_split(read_manifest(str(one_val_shard))) == "val" and held_out_split(train) is None
