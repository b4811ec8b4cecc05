"""Several shard sets from the command lines (issue 30): `models.train --train-shards A B --train-weights ...`
mixes them (a line in train.log says what each gives an epoch), sets that do not fit together are one line (exit
2), several `--val-shards` are each evaluated, and `models.evaluate --shards A B` prints one table with a row per
set and writes a JSON per set. Also the smaller items: `--help` states no flag's default as True/False, and the
flickr30k-1k hint names its split file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.evaluate import PROTOCOLS, check_protocol
from models.evaluate import main as evaluate_main
from models.train import main as train_main
from models.train import make_parser

from ..helpers import copy_shards, one_line


@pytest.fixture(scope="module")
def small_val(tmp_path_factory, sample_coco, tiny_encoder) -> Path:
    """The sample's 12 val images at 64 px: a second set of the same encoder and size as `small_shards`."""
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    out = tmp_path_factory.mktemp("small-val") / "val"
    build_shards(BuildConfig(coco_root=sample_coco, split="val", out=out, text_encoder=str(tiny_encoder),
                             image_size=64, samples_per_shard=5, workers=1, progress=False))
    return out


def _cli(out, *extra):
    return ["--out", str(out), "--arch", "resnet18", "--no-pretrained", "--batch-size", "8", "--num-workers", "0",
            "--decode-threads", "1", "--quiet", "--warmup-steps", "1", *map(str, extra)]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, small_shards, small_val):
    out = tmp_path_factory.mktemp("mixed") / "run"
    code = train_main(["--train-shards", str(small_shards), str(small_val), "--train-weights", "0.75", "0.25",
                       "--epoch-samples", "32", "--max-steps", "6",
                       "--val-shards", str(small_val), str(small_shards), *_cli(out)])
    assert code == 0
    return out


def test_a_mixed_run_says_what_each_set_gives_and_evaluates_each_val_set(mixed_run, small_shards, small_val):
    log = (mixed_run / "train.log").read_text()
    assert f"sources (mixed; batch['source'] indexes them): {small_shards} 24 (75%), {small_val} 8 (25%) of 32" in log
    assert "train: 6 steps" in log
    params = json.loads((mixed_run / "params.json").read_text())
    assert params["steps_per_epoch"] == 4 and params["config"]["loader"]["weights"] == [0.75, 0.25]
    assert len(list(mixed_run.glob("eval-*.json"))) == 2  # one per --val-shards set
    state = torch.load(mixed_run / "latest.pt", weights_only=True)
    assert state["loader"]["n_samples"] == 32


def test_a_mixed_run_resumes(mixed_run, small_shards, small_val, capsys):
    code = train_main(["--train-shards", str(small_shards), str(small_val), "--train-weights", "0.75", "0.25",
                       "--epoch-samples", "32", "--max-steps", "8", "--resume", str(mixed_run), *_cli(mixed_run)])
    assert code == 0 and "resumed from step 6" in (mixed_run / "train.log").read_text()
    capsys.readouterr()
    code = train_main(["--train-shards", str(small_shards), str(small_val), "--train-weights", "0.5", "0.5",
                       "--epoch-samples", "32", "--max-steps", "9", "--resume", str(mixed_run), *_cli(mixed_run)])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "other shards" in line


def test_sets_of_two_encoders_are_one_line_naming_both(small_shards, small_val, tmp_path, capsys):
    other = copy_shards(small_val, tmp_path / "val")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["text_encoder"].update(name="openai/clip-vit-large-patch14", fingerprint="clip-vit-large-patch14#00ff")
    (other / "manifest.json").write_text(json.dumps(manifest))
    code = train_main(["--train-shards", str(small_shards), str(other), "--train-weights", "1", "1",
                       *_cli(tmp_path / "run")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "different text encoders" in line and str(small_shards) in line and str(other) in line


def test_weights_for_another_number_of_sets_are_one_line(small_shards, small_val, tmp_path, capsys):
    code = train_main(["--train-shards", str(small_shards), str(small_val), "--train-weights", "1",
                       *_cli(tmp_path / "run")])
    assert code == 2 and "1 weights for 2 sources" in one_line(capsys.readouterr().err)


def test_evaluate_two_sets_prints_one_table_and_writes_two_files(mixed_run, small_shards, small_val, tmp_path,
                                                                 capsys):
    capsys.readouterr()
    out = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(mixed_run), "--shards", str(small_shards), str(small_val),
                          "--device", "cpu", "--show-images", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    table = text[text.index("shards "):].splitlines()
    assert table[0].split()[:3] == ["shards", "protocol", "images"]
    assert table[1].startswith(str(small_shards)) and table[1].split()[1:3] == ["all", "48"]
    assert table[2].startswith(str(small_val)) and table[2].split()[1:3] == ["all", "12"]
    assert len(list(out.glob("eval-*.json"))) == 2


def test_evaluate_takes_one_protocol_for_all_or_one_per_set(mixed_run, small_shards, small_val, capsys):
    code = evaluate_main(["--checkpoint", str(mixed_run), "--shards", str(small_shards), str(small_val),
                          "--protocol", "all", "all", "all"])
    assert code == 2 and "3 given for 2 shard sets" in one_line(capsys.readouterr().err)


def test_flickr30k_1k_on_a_small_split_names_its_split_file():
    from models.errors import UserError

    with pytest.raises(UserError) as err:
        check_protocol(PROTOCOLS["flickr30k-1k"], 12)
    assert "dataset_flickr30k.json" in str(err.value) and "--image-root" in str(err.value)
    assert "dataset_coco.json" not in str(err.value)


def test_train_help_states_no_flags_default(capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: True)" not in text and "(default: False)" not in text and "(default: None)" not in text
    assert "--quiet no progress bar" in text and "--train-weights" in text


def test_bad_train_weights_are_named_by_their_option(small_shards, small_val, tmp_path, capsys):
    code = train_main(["--train-shards", str(small_shards), str(small_val), "--train-weights", "0", "0",
                       *_cli(tmp_path / "run")])
    assert code == 2 and one_line(capsys.readouterr().err).startswith("train: error: --train-weights must be")
