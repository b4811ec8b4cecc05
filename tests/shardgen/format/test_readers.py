"""Our shards read unchanged by other tools' own code: webdataset, HF datasets, wids, open_clip, CLIP_benchmark,
DALI's index format and GNU tar."""

import io
import json
import subprocess
from argparse import Namespace

import numpy as np
import pytest

from shardgen.cli.main import main

from ...helpers import read_all


@pytest.fixture(scope="module")
def truth(train_shards):
    t = dict(read_all(train_shards))
    assert {len(s["meta"]["captions"]) for s in t.values()} >= {6, 7}  # the awkward cases are present
    return t


def _urls(shards):
    return [str(shards / s["name"]) for s in json.loads((shards / "manifest.json").read_text())["shards"]]


def test_webdataset_plain_pipeline(train_shards, truth):
    import webdataset as wds

    ds = (wds.WebDataset(_urls(train_shards), shardshuffle=False).decode("pil")
          .to_tuple("__key__", "jpg", "txt", "npy", "json"))
    seen = []
    for key, img, txt, npy, meta in ds:
        s = truth[key]
        assert img.size == (224, 224) and img.mode == "RGB"
        assert txt == s["meta"]["captions"][0] and meta["captions"] == s["meta"]["captions"]
        assert np.array_equal(npy, s["npy"]) and npy.dtype == np.float16
        seen.append(key)
    assert seen == list(truth)


def test_the_format_docs_webdataset_snippet_runs_on_any_shard_set(train_shards, truth, tmp_path, monkeypatch):
    """docs/format.md's snippet, as written, on a set of 5 shards (not the 83 of COCO train)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "format.md").read_text().splitlines()
    start = next(i for i, line in enumerate(doc) if line.startswith("import json, webdataset as wds"))
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "train").symlink_to(train_shards)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec("\n".join(doc[start:start + 3]), scope)
    assert [key for key, *_ in scope["ds"]] == list(truth)


@pytest.mark.parametrize("streaming", [False, True])
def test_huggingface_datasets_webdataset_builder(train_shards, truth, tmp_path, streaming):
    import datasets

    ds = datasets.load_dataset("webdataset", data_files={"train": _urls(train_shards)}, split="train",
                               streaming=streaming, cache_dir=str(tmp_path / "hf"))
    rows = list(ds)
    assert [r["__key__"] for r in rows] == list(truth)
    for r in rows:
        s = truth[r["__key__"]]
        assert r["json"]["captions"] == s["meta"]["captions"] and r["txt"] == s["meta"]["captions"][0]
        assert np.array_equal(np.asarray(r["npy"], dtype=np.float16), s["npy"])  # list of lists of float16
        assert r["jpg"].size == (224, 224)


def test_wids_random_access(train_shards, truth, tmp_path):
    import wids

    ds = wids.ShardListDataset(str(train_shards / "shardindex.json"), cache_dir=str(tmp_path / "wids"))
    keys = list(truth)
    assert len(ds) == len(keys) == json.loads((train_shards / "manifest.json").read_text())["totals"]["n_samples"]
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["__key__"] == keys[i]
    s = ds[len(ds) - 1]
    assert s[".txt"] == truth[keys[-1]]["meta"]["captions"][0]
    assert np.array_equal(s[".npy"], truth[keys[-1]]["npy"])


def test_open_clip_training_data_path(train_shards, truth, monkeypatch):
    import functools

    import open_clip
    import open_clip_train.data as oc_data
    from open_clip_train.data import get_wds_dataset

    # open_clip_train <= 3.3 with webdataset >= 0.2.96 fails on *every* shard set with KeyError: 'fname'
    # (webdataset#384, open_clip#935); the fix its maintainers give is eof_value=None. Not specific to our shards.
    monkeypatch.setattr(oc_data, "tar_file_expander", functools.partial(oc_data.tar_file_expander, eof_value=None))

    args = Namespace(train_data=str(train_shards / "train-{000000..000004}.tar"), val_data=None,
                     train_num_samples=None, dataset_resampled=False, train_data_upsampling_factors=None, seed=0,
                     batch_size=8, workers=1, world_size=1)
    preprocess = open_clip.image_transform(224, is_train=False)
    tokenizer = open_clip.get_tokenizer("RN50")
    info = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    assert info.dataloader.num_samples == 48  # found through our sizes.json
    images, texts = next(iter(info.dataloader))
    assert images.shape == (8, 3, 224, 224) and texts.shape == (8, 77)
    first_caption = next(iter(truth.values()))["meta"]["captions"][0]
    assert tokenizer(first_caption).shape == (1, 77)


def test_clip_benchmark_reads_export(train_shards, truth, tmp_path):
    from clip_benchmark.datasets.builder import build_wds_dataset

    out = tmp_path / "cb"
    assert main(["export", str(train_shards), "--out", str(out), "--samples-per-shard", "20"]) == 0
    assert (out / "test" / "nshards.txt").read_text().strip() == "3"
    ds = build_wds_dataset("wds/coco_shardgen", transform=lambda img: img.size, split="test", data_dir=str(out))
    rows = list(ds)
    assert len(rows) == 48
    by_caps = {tuple(s["meta"]["captions"]) for s in truth.values()}
    assert all(size == (224, 224) and tuple(caps) in by_caps for size, caps in rows)


def test_dali_index_matches_gnu_tar_offsets(sample_shards):
    out = sample_shards("val", samples_per_shard=5)
    shard = out / "val-000000.tar"
    lines = (out / "val-000000.idx").read_text().splitlines()
    assert lines[0] == "v1.2 5" and len(lines) == 6
    # independent offsets, the way NVIDIA's wds2idx derives them from GNU tar
    blocks = subprocess.run(["tar", "--list", "--block-number", "--file", str(shard)], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    header_block = {ln.split(": ", 1)[1]: int(ln.split(":")[0].split()[1]) for ln in blocks if ": " in ln}
    data = shard.read_bytes()
    for line in lines[1:]:
        parts = line.split()
        assert [parts[i] for i in range(0, len(parts), 4)] == ["jpg", "json", "npy", "txt"]
        for ext, offset, size, name in zip(*[iter(parts)] * 4):
            assert int(offset) == (header_block[name] + 1) * 512
            if ext == "json":
                assert json.loads(data[int(offset): int(offset) + int(size)])["image_id"] >= 0
    assert main(["verify", str(out), "--quiet"]) == 0


def test_tar_lists_members_grouped_and_sorted(train_shards):
    names = subprocess.run(["tar", "tf", str(train_shards / "train-000000.tar")], capture_output=True, text=True,
                           check=True).stdout.split()
    assert names == sorted(names)
    keys = [n.split(".")[0] for n in names]
    assert all(keys[i:i + 4] == [keys[i]] * 4 for i in range(0, len(keys), 4))
    assert all(n.count(".") == 1 for n in names)  # no dots in keys: every tool splits them the same


def test_baseline_jpeg_for_dali(train_shards, truth):
    jpg = next(iter(truth.values()))["jpg"]
    assert b"\xff\xc0" in jpg and b"\xff\xc2" not in jpg  # SOF0 (baseline), no SOF2 (progressive)
    from PIL import Image

    assert Image.open(io.BytesIO(jpg)).mode == "RGB"
