"""What `models.train` and `models.evaluate` write: no password of a shard URL in params.json, checkpoints, logs
or results; no write through a link planted at a fixed name; a full disk or a forbidden folder at any write is one
line and exit 2 (`shardgen.format.errors.USER_ERRNOS`)."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from models.evaluate import main as evaluate
from models.train import main as train

def last_line(err: str) -> str:
    """The line a command ended with (training prints its start line first); no traceback."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]
from tests.netutil import FileServer

SECRET = "topsecret"


def _train_argv(shards, out, *extra) -> list[str]:
    return ["--train-shards", str(shards), "--out", str(out), "--arch", "resnet18", "--no-pretrained",
            "--batch-size", "8", "--num-workers", "0", "--decode-threads", "1", "--quiet", "--max-steps", "2",
            *map(str, extra)]


def test_a_shard_url_password_reaches_no_file_and_no_line(tmp_path, small_shards, capsys):
    out = tmp_path / "run"
    with FileServer(root=small_shards) as srv:
        url = srv.url.replace("http://", f"http://user:{SECRET}@")
        assert train(_train_argv(url, out, "--checkpoint-every", 1, "--synthetic")) == 0
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    params = (out / "params.json").read_text()
    assert SECRET not in params and "user:****@127.0.0.1" in json.loads(params)["config"]["train_shards"]
    for name in ("latest.pt", "step-00000001.pt"):
        state = torch.load(out / name, weights_only=True)
        assert SECRET not in repr(state["config"]), name
    assert SECRET not in (out / "train.log").read_text()


def test_a_link_planted_at_a_fixed_temporary_name_is_not_written_through(tmp_path, small_shards):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    for name in ("params.json.tmp", "metrics.jsonl.tmp", ".curves.png.tmp", "latest.pt.tmp"):
        (out / name).symlink_to(outside)  # the fixed temporary names these files were written through
    assert train(_train_argv(small_shards, out, "--checkpoint-every", 1)) == 0
    assert outside.read_text() == "keep me"
    assert json.loads((out / "params.json").read_text())["total_steps"] == 2


def test_a_link_at_train_log_is_refused_in_one_line(tmp_path, small_shards, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.log").symlink_to(outside)
    assert train(_train_argv(small_shards, out)) == 2
    assert "train.log: is a link; refusing to write through it" in last_line(capsys.readouterr().err)
    assert outside.read_text() == "keep me"


def _fail_fsync(monkeypatch, code: int, name: str) -> None:
    """The atomic writer's fsync of a file whose name holds `name` fails with `code`, as a full disk would."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names open files through /proc")


@needs_proc
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EPERM])
@pytest.mark.parametrize("name", ["params.json", "metrics.jsonl", "curves.png"])
def test_a_refused_write_during_training_is_one_line_and_exit_2(tmp_path, small_shards, capsys, monkeypatch,
                                                                  code, name):
    _fail_fsync(monkeypatch, code, name)
    out = tmp_path / "run"
    assert train(_train_argv(small_shards, out)) == 2
    line = last_line(capsys.readouterr().err)
    assert line.startswith(f"train: error: {out / name}: {os.strerror(code)}; "), line
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@needs_proc
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EPERM])
def test_a_refused_write_during_evaluation_is_one_line_and_exit_2(tmp_path, small_shards, capsys, monkeypatch,
                                                                   code):
    out = tmp_path / "run"
    assert train(_train_argv(small_shards, out, "--synthetic")) == 0
    capsys.readouterr()
    _fail_fsync(monkeypatch, code, "eval-")
    assert evaluate(["--checkpoint", str(out), "--shards", str(small_shards), "--show-images", "0"]) == 2
    line = last_line(capsys.readouterr().err)  # after the warning that these are its training shards
    assert line.startswith(f"evaluate: error: {out}/eval-") and f": {os.strerror(code)}; " in line, line
