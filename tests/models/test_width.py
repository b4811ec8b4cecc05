"""Any text tower's width (issue 30): shards whose embeddings are 768-d (ViT-L/14's towers) verify, load, train a
768-d projection head and evaluate, with the manifest, the checkpoint and the evaluation all 768-d; a checkpoint
of another width is refused in one line on resume and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loaders import make_loader
from models.evaluate import main as evaluate_main
from models.train import main as train_main
from shardgen.format import SchemaError, encode_npy, parse_sample
from shardgen.publish.verify import verify

from ..helpers import one_line

WIDE = 768


@pytest.fixture(scope="module")
def wide_shards(tmp_path_factory, sample_coco):
    """A real build with a 768-d text tower (random init, tiny): the build takes the width from the encoder."""
    from shardgen.sharding.pipeline import BuildConfig, build_shards
    from shardgen.text.random_init import init_encoder

    folder = tmp_path_factory.mktemp("wide")
    encoder = init_encoder(folder / "enc", size="tiny", projection_dim=WIDE)
    out = folder / "train"
    build_shards(BuildConfig(coco_root=sample_coco, split="train", out=out, text_encoder=str(encoder),
                             image_size=64, samples_per_shard=10, workers=1, progress=False, limit=24))
    return out


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory, wide_shards):
    """20 steps on the 768-d shards."""
    out = tmp_path_factory.mktemp("wide-run") / "run"
    code = train_main(["--train-shards", str(wide_shards), "--out", str(out), "--arch", "resnet18",
                       "--no-pretrained", "--batch-size", "8", "--num-workers", "0", "--decode-threads", "1",
                       "--max-steps", "20", "--warmup-steps", "2", "--quiet"])
    assert code == 0
    return out


def test_the_format_takes_the_width_its_manifest_states(wide_shards):
    manifest = json.loads((wide_shards / "manifest.json").read_text())
    assert manifest["embed_dim"] == WIDE
    report = verify(str(wide_shards))
    assert report.ok, report.problems
    meta = {"image_id": 7, "file_name": "x.jpg", "captions": ["a"], "width": 1, "height": 1}
    fields = {"json": json.dumps(meta).encode(), "txt": b"a", "jpg": b"",
              "npy": encode_npy(np.zeros((1, WIDE), np.float16))}
    assert parse_sample("000000000007", fields, source="s", embed_dim=WIDE).embeddings.shape == (1, WIDE)
    with pytest.raises(SchemaError, match=r"expected float16 \(1, 512\)"):
        parse_sample("000000000007", fields, source="s")  # a set that says 512 (the default)


def test_the_loader_carries_the_manifests_width(wide_shards):
    loader = make_loader(str(wide_shards), batch_size=4, num_workers=1)
    batch = next(iter(loader))
    loader.close()
    assert loader.embed_dim == WIDE and batch["text_embedding"].shape == (4, WIDE)
    every = make_loader(str(wide_shards), batch_size=4, caption="all")
    assert next(iter(every))["text_embeddings"].shape[-1] == WIDE


@pytest.mark.slow
def test_a_768_d_run_trains_a_768_d_head_and_evaluates(wide_run, wide_shards, capsys):
    state = torch.load(wide_run / "latest.pt", weights_only=True)
    assert state["step"] == 20 and state["embed_dim"] == WIDE and state["model"]["head.2.weight"].shape[0] == WIDE
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(wide_run), "--shards", str(wide_shards), "--device", "cpu",
                          "--show-images", "0"]) == 0
    (result,) = wide_run.glob("eval-*.json")
    assert json.loads(result.read_text())["n_images"] == 24  # the build's --limit


@pytest.mark.slow
def test_another_width_is_one_line_on_resume_and_evaluation(wide_run, small_shards, capsys):
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(wide_run), "--shards", str(small_shards), "--device", "cpu"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "768-d" in line and "512-d" in line and str(small_shards) in line
    code = train_main(["--train-shards", str(small_shards), "--out", str(wide_run), "--resume", str(wide_run),
                       "--arch", "resnet18", "--no-pretrained", "--batch-size", "8", "--num-workers", "0",
                       "--max-steps", "22", "--quiet"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "768-d" in line and "512-d" in line and "--train-shards" in line


def test_init_encoder_makes_a_tower_of_another_width(tmp_path, capsys):
    from shardgen.cli.main import main as shardgen_main
    from shardgen.text.encoder import TextEncoder

    assert shardgen_main(["init-encoder", str(tmp_path / "enc"), "--size", "tiny", "--projection-dim", "768"]) == 0
    assert "768-d" in capsys.readouterr().out
    encoder = TextEncoder(str(tmp_path / "enc"))
    assert encoder.embed_dim == WIDE and encoder.encode(["a photo"]).shape == (1, WIDE)
    assert shardgen_main(["init-encoder", str(tmp_path / "bad"), "--size", "tiny", "--projection-dim", "0"]) == 2


def test_a_768_tower_builds_768_d_rows_and_says_so(wide_shards):
    manifest = json.loads((wide_shards / "manifest.json").read_text())
    assert manifest["embed_dim"] == WIDE and manifest["text_encoder"]["embed_dim"] == WIDE
    assert manifest["text_encoder"]["fingerprint"].startswith("enc#")
