import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import shardgen.sharding.pipeline as build_mod
import shardgen.sharding.shardtask as shardtask
from shardgen.sharding.pipeline import BuildConfig, build_shards
from shardgen.cli.main import main
from shardgen.sources.coco import load_split
from shardgen.format.coco_folders import find_split
from shardgen.text.encoder import TextEncoder

from ...helpers import digests, read_all


def test_round_trip_captions_align_with_embeddings(train_shards, sample_coco, tiny_encoder):
    records, _ = load_split(find_split(sample_coco, "train"))
    samples = read_all(train_shards)
    assert [k for k, _ in samples] == [f"{r.image_id:012d}" for r in records]  # every image, in order
    encoder = TextEncoder(str(tiny_encoder))
    for (key, s), rec in zip(samples, records):
        assert s["meta"]["captions"] == list(rec.captions)
        assert s["txt"] == rec.captions[0]
        assert s["npy"].dtype == np.float16 and s["npy"].shape == (len(rec.captions), 512)
        expected = encoder.encode(list(rec.captions))  # row i must be captions[i]'s embedding
        assert torch.allclose(torch.from_numpy(s["npy"]).float(), expected, atol=2e-3)
        assert s["meta"]["image_id"] == rec.image_id and s["meta"]["file_name"] == rec.file_name
        assert (s["meta"]["orig_width"], s["meta"]["orig_height"], s["meta"]["width"]) == (640, 480, 224)
    assert {len(s["meta"]["captions"]) for _, s in samples} == {5, 6, 7}


def test_rollover_and_manifest(train_shards):
    m = json.loads((train_shards / "manifest.json").read_text())
    assert [s["n_samples"] for s in m["shards"]] == [10, 10, 10, 10, 8]
    assert [s["name"] for s in m["shards"]] == [f"train-{i:06d}.tar" for i in range(5)]
    assert m["totals"]["n_samples"] == 48 and m["schema_version"] == 1
    assert m["text_encoder"]["random_init"] is True and m["text_encoder"]["semantic"] is False
    assert json.loads((train_shards / "sizes.json").read_text())["train-000004.tar"] == 8
    wids = json.loads((train_shards / "shardindex.json").read_text())
    assert wids["wids_version"] == 1 and wids["shardlist"][0] == {"url": "train-000000.tar", "nsamples": 10}
    assert (train_shards / "train_text_embeddings.pt").is_file()


def test_size_cap_rolls_over_early(tmp_path, sample_coco, tiny_encoder):
    out = tmp_path / "capped"
    r = build_shards(BuildConfig(coco_root=sample_coco, split="val", out=out, text_encoder=str(tiny_encoder),
                          samples_per_shard=100, max_shard_bytes=80_000, workers=1, progress=False))
    counts = [s.n_samples for s in r.manifest.shards]
    assert sum(counts) == 12 and len(counts) > 1 and max(counts) < 12


def test_rebuild_is_byte_identical_and_workers_do_not_matter(tmp_path, sample_coco, tiny_encoder, train_shards):
    out = tmp_path / "again"
    build_shards(BuildConfig(coco_root=sample_coco, split="train", out=out, text_encoder=str(tiny_encoder),
                      samples_per_shard=10, workers=2, progress=False))
    assert digests(out) == digests(train_shards)


def test_resume_after_interrupted_build(tmp_path, sample_coco, tiny_encoder, train_shards, monkeypatch):
    out = tmp_path / "resume"
    real = shardtask.write_shard
    calls = []

    def dying_write(path, samples, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(path)
        return real(path, samples, **kwargs)

    monkeypatch.setattr(shardtask, "write_shard", dying_write)
    cfg = BuildConfig(coco_root=sample_coco, split="train", out=out, text_encoder=str(tiny_encoder),
                      samples_per_shard=10, workers=1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_shards(cfg)
    assert not (out / "manifest.json").exists()
    monkeypatch.setattr(shardtask, "write_shard", real)
    report = build_shards(cfg)
    assert report.resumed_shards == 2
    assert digests(out) == digests(train_shards)


@pytest.mark.slow
def test_killed_build_process_resumes_byte_identical(tmp_path, sample_coco, tiny_encoder, train_shards):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "shardgen", "build", "--coco-root", str(sample_coco), "--split", "train",
           "--out", str(out), "--text-encoder", str(tiny_encoder), "--samples-per-shard", "10", "--workers", "1",
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / build_mod.JOURNAL_NAME
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if journal.is_file() and len(json.loads(journal.read_text() or "{}").get("shards", [])) >= 1:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert digests(out) == digests(train_shards)


def _make_bad_coco(tmp_path, sample_coco) -> tuple[Path, dict]:
    root = tmp_path / "bad"
    shutil.copytree(sample_coco, root)
    ann_path = root / "annotations" / "captions_val2014.json"
    ann = json.loads(ann_path.read_text())
    files = [im["file_name"] for im in ann["images"]]
    d = root / "val2014"
    (d / files[0]).write_bytes((d / files[0]).read_bytes()[:5000])  # truncated
    Image.open(d / files[1]).save(d / files[1], format="PNG")  # PNG named .jpg
    Image.open(d / files[2]).convert("CMYK").save(d / files[2], format="JPEG")
    Image.open(d / files[3]).convert("L").save(d / files[3], format="JPEG")
    Image.open(d / files[4]).convert("RGBA").save(d / files[4], format="PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(d / files[5]).save(d / files[5], exif=exif.tobytes())
    (d / files[6]).unlink()  # missing
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] != ann["images"][7]["id"]]  # no captions
    ann["annotations"].append({"id": 99999, "image_id": ann["images"][8]["id"], "caption": "long " * 120})
    ann["annotations"].append({"id": 99998, "image_id": ann["images"][8]["id"], "caption": "Ünïcode café \n\n  "})
    ann_path.write_text(json.dumps(ann))
    return root, {"truncated": files[0], "png": files[1], "cmyk": files[2], "gray": files[3], "rgba": files[4],
                  "exif": files[5], "missing": files[6], "nocap": files[7], "long": files[8]}


def test_bad_inputs_are_converted_or_counted(tmp_path, sample_coco, tiny_encoder):
    root, f = _make_bad_coco(tmp_path, sample_coco)
    r = build_shards(BuildConfig(coco_root=root, split="val", out=tmp_path / "out", text_encoder=str(tiny_encoder),
                          samples_per_shard=4, workers=1, progress=False))
    m = r.manifest
    assert m.failures["corrupt_image"]["files"] == [f["truncated"]]
    assert m.failures["missing_file"]["files"] == [f["missing"]]
    assert m.failures["no_captions"]["files"] == [f["nocap"]]
    for reason, name in [("png_source", "png"), ("cmyk_to_rgb", "cmyk"), ("gray_to_rgb", "gray"),
                         ("alpha_flattened", "rgba"), ("exif_rotated", "exif"),
                         ("caption_truncated_to_77_tokens", "long")]:
        assert f[name] in m.conversions[reason]["files"], reason
    assert m.n_samples == 12 - 3  # nothing else lost
    samples = dict(read_all(tmp_path / "out"))
    long_one = next(s for s in samples.values() if s["meta"]["file_name"] == f["long"])
    assert "Ünïcode café" in long_one["meta"]["captions"] and long_one["npy"].shape[0] == 7
    rotated = next(s for s in samples.values() if s["meta"]["file_name"] == f["exif"])["meta"]
    assert (rotated["orig_width"], rotated["orig_height"]) == (480, 640)
    assert main(["verify", str(tmp_path / "out"), "--quiet"]) == 0


def test_cli_bad_annotations_exit_2_without_output(tmp_path, sample_coco, capsys):
    root = tmp_path / "c"
    shutil.copytree(sample_coco, root)
    (root / "annotations" / "captions_train2014.json").write_text("{broken")
    code = main(["build", "--coco-root", str(root), "--split", "train", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "captions_train2014.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    (root / "annotations" / "captions_train2014.json").unlink()
    assert main(["build", "--coco-root", str(root), "--split", "train", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_cli_offline_encoder_exit_2(tmp_path, sample_coco, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["build", "--coco-root", str(sample_coco), "--split", "val", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and "--text-encoder PATH" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_one_split_per_out_dir(tmp_path, train_shards, sample_coco, tiny_encoder):
    out = tmp_path / "mixed"
    shutil.copytree(train_shards, out)
    assert main(["build", "--coco-root", str(sample_coco), "--split", "val", "--out", str(out),
                 "--text-encoder", str(tiny_encoder), "--quiet"]) == 2


def test_rebuild_reuses_embedding_cache_without_loading_model(tmp_path, train_shards, sample_coco, tiny_encoder,
                                                              monkeypatch):
    out = tmp_path / "cached"
    shutil.copytree(train_shards, out)
    os.remove(out / "manifest.json")
    import shardgen.text.encoder

    monkeypatch.setattr(shardgen.text.encoder.TextEncoder, "__init__", lambda *a, **k: pytest.fail("model was loaded"))
    recorded = json.loads((train_shards / "manifest.json").read_text())["text_encoder"]
    assert recorded["name"] == tiny_encoder.name  # the base name, no path of the building machine
    assert recorded["fingerprint"].startswith(f"{tiny_encoder.name}#")
    build_shards(BuildConfig(coco_root=sample_coco, split="train", out=out, text_encoder=str(tiny_encoder),
                             samples_per_shard=10,
                      workers=1, progress=False))
    assert digests(out) == digests(train_shards)
