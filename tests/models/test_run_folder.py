"""What a run folder keeps across its parts (issue 30): train.log's end and stop lines, and each part's
params.json (a resume keeps the previous one as params-<n>.json)."""

from __future__ import annotations

import json

import pytest

import models.train as train_module
from models.train import main


def _cli(shards, out, *extra):
    return ["--train-shards", str(shards), "--out", str(out), "--arch", "resnet18", "--no-pretrained",
            "--batch-size", "8", "--num-workers", "0", "--decode-threads", "1", "--quiet", "--warmup-steps", "1",
            *map(str, extra)]


@pytest.mark.slow
def test_each_part_keeps_its_params_and_ends_with_a_line(tmp_path, small_shards):
    out = tmp_path / "run"
    assert main(_cli(small_shards, out, "--max-steps", 2)) == 0
    assert main(_cli(small_shards, out, "--max-steps", 3, "--resume", out)) == 0
    assert main(_cli(small_shards, out, "--max-steps", 4, "--resume", out)) == 0
    parts = [json.loads((out / name).read_text()) for name in ("params-1.json", "params-2.json", "params.json")]
    assert [p["total_steps"] for p in parts] == [2, 3, 4]
    assert parts[0]["resumed_from"] is None and parts[2]["resumed_from"].endswith("latest.pt")
    log = (out / "train.log").read_text()
    assert [line.split("train: ")[1].split(",")[0] for line in log.splitlines() if "train: done" in line] == \
        ["done at step 2", "done at step 3", "done at step 4"]


def test_a_stop_is_a_line_in_train_log_and_once_on_stderr(tmp_path, small_shards, capsys, monkeypatch):
    real, calls = train_module.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step)
    out = tmp_path / "run"
    assert main(_cli(small_shards, out, "--max-steps", 6)) == 130
    err = capsys.readouterr().err
    assert err.count("interrupted at step 2") == 1
    log = (out / "train.log").read_text()
    assert "train: interrupted at step 2; checkpoint" in log and "done at" not in log
