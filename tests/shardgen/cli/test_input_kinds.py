"""`shardgen --help` and the README's first screen name every input kind the builder takes (issue 30: they named
only COCO)."""

from __future__ import annotations

from pathlib import Path

from shardgen.cli.main import main

KINDS = ("COCO", "2014", "2017", "Karpathy", "Flickr30k", "caption table", "webdataset")


def test_shardgen_help_names_every_input_kind(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for kind in (*KINDS, "dataset_flickr30k.json", "--captions", "--webdataset", "jsonl, csv, parquet"):
        assert kind in text, kind


def test_the_readmes_first_screen_names_every_input_kind():
    first_screen = " ".join((Path(__file__).resolve().parents[3] / "README.md").read_text().splitlines()[:8])
    for kind in KINDS:
        assert kind in first_screen, kind
