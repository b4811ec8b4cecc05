"""The command line: defaults read off BuildConfig, sizes with units, --version, usage of the right subcommand,
and the error policy (bad input → one line, exit 2; a bug keeps its traceback; Ctrl-C → 130)."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import shardgen.sharding.pipeline
from shardgen.cli import main as cli
from shardgen.cli.main import main, make_parser, parse_byte_size
from shardgen.cli.build import build_config
from shardgen.config import BuildConfig
from shardgen.errors import SchemaError

from ...helpers import one_line

BUILD = ["build", "--coco-root", "c", "--split", "train", "--out", "o"]



def test_build_defaults_are_build_configs():
    args = make_parser().parse_args(BUILD)
    assert build_config(args) == BuildConfig(coco_root=Path("c"), split="train", out=Path("o"))
    build_parser = next(a for a in make_parser()._actions if a.dest == "command").choices["build"]
    options = {a.dest for a in build_parser._actions}
    settings = {f.name for f in dataclasses.fields(BuildConfig)} - {"source_options"}  # filled by input kinds
    assert settings <= options  # every setting has an option


def test_a_changed_default_reaches_the_command_line(monkeypatch):
    monkeypatch.setattr(BuildConfig.__dataclass_fields__["jpeg_quality"], "default", 77)
    monkeypatch.setattr(BuildConfig.__dataclass_fields__["crop"], "default", False)
    args = make_parser().parse_args(BUILD)
    assert args.jpeg_quality == 77 and args.crop is False


@pytest.mark.parametrize("text,expected", [("512MiB", 512 * 2**20), ("1GB", 10**9), ("1.5 GiB", 3 * 2**29),
                                           ("536870912", 536870912), ("64kib", 65536), ("100b", 100)])
def test_byte_sizes_with_units(text, expected):
    assert parse_byte_size(text) == expected


def test_max_shard_bytes_takes_units(capsys):
    args = make_parser().parse_args([*BUILD, "--max-shard-bytes", "1GB"])
    assert build_config(args).max_shard_bytes == 10**9
    assert main([*BUILD, "--max-shard-bytes", "5XB"]) == 2
    assert "--max-shard-bytes: '5XB' is not a size" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("shardgen ") and len(out.split()) == 2


def test_unknown_option_shows_the_subcommands_usage(capsys):
    assert main([*BUILD, "--workers-count", "2"]) == 2
    err = capsys.readouterr().err
    assert "usage: shardgen build" in err and "unrecognized arguments: --workers-count 2" in err


def test_help_loads_neither_torch_nor_the_format_layer():
    code = ("import sys\nfrom shardgen.cli.main import main\n"
            "for argv in (['--help'], ['build', '--help'], ['--version']):\n"
            "    assert main(argv) == 0\n"
            "heavy = [m for m in ('torch', 'numpy', 'transformers', 'PIL') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(cli.__file__).parents[2], check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("option,value", [("--image-size", "0"), ("--jpeg-quality", "101"), ("--workers", "0"),
                                          ("--samples-per-shard", "0"), ("--max-image-pixels", "0"),
                                          ("--limit", "0"), ("--encode-batch-size", "-3")])
def test_build_option_refused_by_config_names_the_option(option, value, capsys):
    assert main([*BUILD, option, value]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"shardgen build: error: {option} ") and value in line


@pytest.mark.parametrize("argv,needle", [
    (["download", "--root", "r", "--md5", "bogus"], "--md5 'bogus'"),
    (["download", "--root", "r", "--splits", "train,test"], "unknown split 'test'"),
    (["build", "--coco-root", "does/not/exist", "--split", "val", "--out", "o"], "does/not/exist"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert needle in one_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["show", "export"])
def test_reading_a_folder_without_manifest_is_one_line(tmp_path, capsys, command):
    assert main([command, str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no manifest.json there" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [["show", "s", "--out", "g.png", "--columns", "0"],
                                  ["export", "s", "--out", "e", "--samples-per-shard", "0"],
                                  ["sample", "s", "--images", "0"]])
def test_zero_counts_are_refused_by_the_parser(argv, capsys):
    assert main(argv) == 2
    assert "must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), ValueError("a bug"), FileNotFoundError("a bug")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(shardgen.sharding.pipeline, "build_shards", broken)
    with pytest.raises(type(bug), match="a bug"):
        main(BUILD)


def test_bad_data_is_one_line_and_ctrl_c_is_130(monkeypatch, capsys):
    def bad_manifest(*args, **kwargs):
        raise SchemaError("o/manifest.json: not a valid shardgen manifest")

    monkeypatch.setattr(shardgen.sharding.pipeline, "build_shards", bad_manifest)
    assert main(BUILD) == 2
    assert "o/manifest.json" in one_line(capsys.readouterr().err)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shardgen.sharding.pipeline, "build_shards", interrupted)
    assert main(BUILD) == 130
    assert "rerun the same command to resume" in one_line(capsys.readouterr().err)
