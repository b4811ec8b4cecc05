"""`models.evaluate` as a user meets it: results named by what was evaluated, the manifest's text encoder found
from another directory, and one-line errors for a missing or crafted checkpoint."""

import json
import pathlib
import shutil

import pytest
import torch

from models.evaluate import main as evaluate
from models.evaluate import results_path, shards_label

from ..helpers import one_line


@pytest.mark.slow
def test_results_are_named_by_the_shards_and_go_to_out(tmp_path, tiny_run, small_shards, train_shards, capsys):
    assert evaluate(["--checkpoint", str(tiny_run), "--shards", str(small_shards), "--show-images", "0"]) == 0
    own = results_path(tiny_run, str(small_shards))
    assert json.loads(own.read_text())["shards"] == str(small_shards)
    before = own.read_text()
    # other shards whose folder has the same name ("train"): a file of their own, the run's stays as it was
    assert evaluate(["--checkpoint", str(tiny_run), "--shards", str(train_shards), "--show-images", "0"]) == 0
    other = results_path(tiny_run, str(train_shards))
    assert other != own and own.read_text() == before and json.loads(other.read_text())["n_images"] == 48
    out = tmp_path / "elsewhere"
    assert evaluate(["--checkpoint", str(tiny_run / "latest.pt"), "--shards", str(small_shards), "--out", str(out),
                     "--show-images", "1"]) == 0
    assert results_path(out, str(small_shards)).is_file()
    assert (out / f"image_to_text-{shards_label(str(small_shards))}.png").is_file()
    assert f"wrote {results_path(out, str(small_shards))}" in capsys.readouterr().out


def test_query_finds_a_relative_encoder_path_from_another_directory(tmp_path, tiny_run, small_shards, tiny_encoder,
                                                                    monkeypatch, capsys):
    project = tmp_path / "project"  # where the builder ran, with `--text-encoder enc --out shards/val`
    shutil.copytree(tiny_encoder, project / "enc")
    shards = project / "shards" / "val"
    shutil.copytree(small_shards, shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["text_encoder"]["name"] = "enc"
    manifest["text_encoder"].pop("path", None)  # a local encoder is recorded by its base name only
    (shards / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    args = ["--checkpoint", str(tiny_run), "--shards", str(shards), "--query", "a red circle", "--show-images", "0",
            "--out", str(tmp_path / "out")]
    assert evaluate(args) == 0
    assert (tmp_path / "out" / f"text_to_image-{shards_label(str(shards))}.png").is_file()
    assert "random-init text tower" in capsys.readouterr().out
    shutil.rmtree(project / "enc")
    assert evaluate(args) == 2
    err = one_line(capsys.readouterr().err)
    assert "'enc', a local path that is not a folder" in err and "--text-encoder PATH" in err


def test_missing_and_crafted_checkpoints_are_one_line_errors(tmp_path, small_shards, capsys):
    assert evaluate(["--checkpoint", str(tmp_path / "nothere"), "--shards", str(small_shards)]) == 2
    err = one_line(capsys.readouterr().err)
    assert "nothere: no such checkpoint" in err and "resume" not in err

    class Touch:
        def __reduce__(self):
            return pathlib.Path.touch, (tmp_path / "created-by-the-pickle",)

    torch.save({"model": Touch(), "config": {"arch": "resnet18"}, "step": 1}, tmp_path / "evil.pt")
    assert evaluate(["--checkpoint", str(tmp_path / "evil.pt"), "--shards", str(small_shards)]) == 2
    assert "refused to load" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "created-by-the-pickle").exists()


def test_help_shows_the_defaults_and_main_returns_its_codes(capsys):
    assert evaluate(["--help"]) == 0  # main(argv) returns, as shardgen's does: argparse's SystemExit stays inside
    assert "(default: 64)" in " ".join(capsys.readouterr().out.split())
    assert evaluate(["--shards", "s"]) == 2  # a usage error (argparse printed it)
    assert "the following arguments are required: --checkpoint" in capsys.readouterr().err


def test_a_value_evalconfig_refuses_is_named_by_its_option(tmp_path, capsys):
    argv = ["--checkpoint", str(tmp_path / "c.pt"), "--shards", str(tmp_path), "--batch-size", "0"]
    assert evaluate(argv) == 2
    assert one_line(capsys.readouterr().err) == "evaluate: error: --batch-size must be >= 1, got 0"


def test_protocol_needing_more_images_than_the_shards_hold_is_one_line_before_any_work(tiny_run, small_shards,
                                                                                       capsys, monkeypatch):
    import models.evaluate as ev

    monkeypatch.setattr(ev, "embed_shards", None)  # reaching it would be a TypeError, not exit 2
    assert evaluate(["--checkpoint", str(tiny_run), "--shards", str(small_shards), "--protocol", "5k"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "--protocol 5k ranks the first 5000 images, these shards hold 48" in err and "--karpathy" in err


def test_1k_protocol_is_the_mean_of_its_folds_and_named_in_table_and_json(tmp_path, tiny_run, small_shards,
                                                                          monkeypatch, capsys):
    import models.evaluate as ev
    from models.nets.metrics import recall_at_k

    # the protocol's shape at the sample's size: the first 40 of 48 images in 5 folds of 8
    monkeypatch.setitem(ev.PROTOCOLS, "1k", ev.Protocol("1k", 40, 5, "mean over 5 folds of 8 images"))
    assert evaluate(["--checkpoint", str(tiny_run), "--shards", str(small_shards), "--protocol", "1k",
                     "--show-images", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "protocol 1k: mean over 5 folds of 8 images" in out and "not Karpathy's 5000-image test split" in out
    result = json.loads(results_path(tmp_path, str(small_shards), "1k").read_text())
    assert not results_path(tmp_path, str(small_shards)).exists()  # the whole-split results keep their own file
    assert (result["protocol"], result["n_images"], result["n_folds"], result["fold_images"]) == ("1k", 40, 5, 8)
    assert isinstance(result["recall_seconds"], float) and len(result["folds"]) == 5
    loaded = ev.load_model(tiny_run)
    emb = ev.embed_shards(loaded.model, str(small_shards), device=torch.device("cpu"))
    assert result["n_captions"] == int((emb["owner"] < 40).sum())
    for f, fold in enumerate(result["folds"]):
        mine = (emb["owner"] >= 8 * f) & (emb["owner"] < 8 * f + 8)
        assert fold == pytest.approx(recall_at_k(emb["image"][8 * f:8 * f + 8], emb["text"][mine],
                                                 emb["owner"][mine] - 8 * f))
    for key in ("text_to_image_R@1", "image_to_text_R@5"):
        assert result[key] == pytest.approx(sum(fold[key] for fold in result["folds"]) / 5)


def test_flickr30k_1k_protocol_ranks_the_flickr_test_split_and_is_named_in_table_and_json(
        tmp_path, tiny_run, small_shards, monkeypatch, capsys):
    import models.evaluate as ev

    # the protocol at the sample's size: the first 12 images, one fold, all their captions
    flickr = ev.PROTOCOLS["flickr30k-1k"]
    assert (flickr.n_images, flickr.n_folds, flickr.dataset) == (1000, 1, "flickr30k")
    monkeypatch.setitem(ev.PROTOCOLS, "flickr30k-1k", flickr._replace(n_images=12))
    assert evaluate(["--checkpoint", str(tiny_run), "--shards", str(small_shards), "--protocol", "flickr30k-1k",
                     "--show-images", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "protocol flickr30k-1k: Flickr30k's 1000-image test split" in out
    assert "not Karpathy's Flickr30k 1000-image test split" in out and "dataset_flickr30k.json" in out
    result = json.loads(results_path(tmp_path, str(small_shards), "flickr30k-1k").read_text())
    assert (result["protocol"], result["n_images"], result["n_folds"]) == ("flickr30k-1k", 12, 1)
    import dataclasses

    manifest = ev.read_manifest(str(small_shards))
    test_split = dataclasses.replace(manifest, source={"dataset": "flickr30k", "split": "test",
                                                       "split_file": "dataset_flickr30k.json"})
    assert ev.is_karpathy_test(test_split, 1000, flickr) and not ev.is_karpathy_test(test_split, 5000)


@pytest.mark.slow
def test_pictures_are_named_per_shard_set_and_the_table_shows_chance(tmp_path, tiny_run, small_shards, train_shards,
                                                                    capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert evaluate(["--checkpoint", str(run), "--shards", str(small_shards), "--show-images", "1"]) == 0
    table = capsys.readouterr().out
    assert evaluate(["--checkpoint", str(run), "--shards", str(train_shards), "--show-images", "1"]) == 0
    # two sets, two pictures: the second evaluation left the first one's picture as it was
    assert sorted(p.name for p in run.glob("image_to_text-*.png")) == sorted(
        f"image_to_text-{shards_label(str(s))}.png" for s in (small_shards, train_shards))
    chance = [line for line in table.splitlines() if line.startswith("  chance")]
    assert len(chance) == 2 and chance[0].split()[1:] == ["2.08", "10.42", "20.83"]  # text → image: K / 48
    result = json.loads(results_path(run, str(small_shards)).read_text())
    assert result["chance_text_to_image_R@5"] == pytest.approx(5 / 48)
    assert "by construction" not in table  # 48 images per ranking: every R@K can miss


def test_chance_levels_and_the_small_split_note():
    from models.runs.report import chance_levels, small_split_note

    levels = chance_levels(4, 20)  # 4 images, 5 captions each
    assert levels["chance_text_to_image_R@1"] == 0.25 and levels["chance_text_to_image_R@5"] == 1.0
    assert levels["chance_image_to_text_R@1"] == pytest.approx(5 / 20)
    assert levels["chance_image_to_text_R@10"] == pytest.approx(1 - 1 / 184756 * 3003)  # C(15,10) / C(20,10)
    assert small_split_note(4) == ("note: each ranking holds only 4 images, so text → image R@5/10 are 100 by "
                                   "construction; compare with the chance rows, or evaluate on more images")
    assert small_split_note(11) is None


def test_curves_give_each_shard_set_its_own_colour():
    from models.runs.curves import recall_style

    sets = [f"s{i}-abc123" for i in range(12)]
    labels = [f"{d} R@{k} {s}" for s in sets for d in ("text→image", "image→text") for k in (1, 5, 10)]
    styles = {label: recall_style(label, labels) for label in labels}
    colours = {s: {styles[x][0] for x in labels if x.endswith(s)} for s in sets}
    assert all(len(c) == 1 for c in colours.values())  # one colour per set
    assert len({next(iter(c)) for c in colours.values()}) == 12  # never two sets alike
    assert len({styles[x][1:] for x in labels}) == 6  # direction × K told apart by line style and marker
