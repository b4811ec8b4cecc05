"""Issue 14's first-hour messages on the shardgen side: each names the real cause and the fix in one line (exit 2,
no traceback), finished builds say so, random-init embeddings are pointed out, "next:" lines run as printed."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shardgen.sharding.pipeline import BuildConfig, build_shards
from shardgen.cli.main import main
from shardgen.cli.hints import python_command, tool_command
from shardgen.sources.download import report

from ...helpers import lying_manifest, malformed_manifest, one_line



def _build(coco: Path, out: Path, encoder: Path | str) -> list[str]:
    return ["build", "--coco-root", str(coco), "--split", "val", "--out", str(out), "--text-encoder", str(encoder),
            "--quiet", "--workers", "1"]


def test_a_folder_that_is_no_model_is_named_with_the_fix(tmp_path, sample_coco, tiny_encoder, capsys):
    assert main(_build(sample_coco, tmp_path / "o", sample_coco)) == 2
    line = one_line(capsys.readouterr().err)
    assert "holds no config.json" in line and "shardgen init-encoder" in line and "openai/clip" in line

    no_tokenizer = tmp_path / "enc"
    no_tokenizer.mkdir()
    shutil.copy(tiny_encoder / "config.json", no_tokenizer)
    assert main(_build(sample_coco, tmp_path / "o", no_tokenizer)) == 2
    assert "holds no tokenizer (tokenizer.json" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_rerunning_a_finished_build_says_already_complete(tmp_path, train_shards, sample_coco, tiny_encoder):
    out = tmp_path / "train"
    shutil.copytree(train_shards, out)
    report_ = build_shards(BuildConfig(coco_root=sample_coco, split="train", out=out, text_encoder=str(tiny_encoder),
                                       samples_per_shard=10, workers=1, progress=False))
    assert "already complete" in report_.summary() and "img/s" not in report_.summary()


def test_the_manifest_records_a_local_encoder_by_name_and_content_without_a_local_path(train_shards, tiny_encoder):
    manifest = (train_shards / "manifest.json").read_text()
    info = json.loads(manifest)["text_encoder"]
    assert info["name"] == Path(tiny_encoder).name and info["random_init"] is True
    assert info["fingerprint"].startswith(Path(tiny_encoder).name + "#") and "path" not in info
    assert str(Path(tiny_encoder).parent) not in manifest  # no absolute path of the building machine


@pytest.mark.parametrize("command", ["show", "verify"])
def test_random_init_embeddings_are_pointed_out(tmp_path, train_shards, capsys, command):
    argv = [command, str(train_shards)] + (["--out", str(tmp_path / "g.png")] if command == "show" else ["--quiet"])
    assert main(argv) == 0
    assert "random-init text tower" in capsys.readouterr().out


def test_next_lines_name_commands_that_run_from_here(tmp_path, monkeypatch):
    bin_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # not activated: the environment's bin folder is not on PATH
    assert Path(python_command()).samefile(sys.executable)
    line = report(tmp_path, shardgen=tool_command("shardgen", "shardgen")).splitlines()[-1]
    assert line.startswith("next: ") and " build --coco-root " in line
    argv = shlex.split(line.removeprefix("next: "))
    command = argv[:argv.index("build")]  # `.venv/bin/shardgen`, or `<python> -m shardgen`
    done = subprocess.run([*command, "build", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "--coco-root" in done.stdout, done.stderr

    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")  # activated
    assert python_command() == "python"
    if (Path(bin_dir) / "shardgen").is_file():
        assert tool_command("shardgen", "shardgen") == "shardgen"


@pytest.mark.parametrize("corrupt", [malformed_manifest, lying_manifest])
def test_a_malformed_or_lying_manifest_is_bad_data_one_line_exit_2(tmp_path, train_shards, capsys, corrupt):
    shards = corrupt(train_shards, tmp_path / "train")
    assert main(["show", str(shards), "--out", str(tmp_path / "grid.png")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("shardgen show: error: bad data: ") and str(shards) in line
    assert ("not valid JSON" if corrupt is malformed_manifest else "manifest says 11") in line
    assert not (tmp_path / "grid.png").exists()
