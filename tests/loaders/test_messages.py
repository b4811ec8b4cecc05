"""Issue 14's first-hour messages on the loader side: a wrong folder or a cache of the wrong split is named with
the fix, instead of a missing manifest.json or a missing image file."""

from __future__ import annotations

import pytest
import torch

from loaders import COCOClipDataset, SourceError, make_loader


def test_a_folder_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(SourceError, match="nothere: no such folder"):
        make_loader(str(tmp_path / "nothere"), batch_size=4)


def test_the_parent_of_the_split_folders_names_them(tmp_path, train_shards):
    (tmp_path / "train").symlink_to(train_shards)
    (tmp_path / "notes").mkdir()
    with pytest.raises(SourceError, match=r"holds the shard folders train, not shards: give one of them"):
        make_loader(str(tmp_path), batch_size=4)


def test_a_cache_of_the_other_split_is_named(sample_coco, train_shards):
    with pytest.raises(SourceError, match="it is the train split's cache"):
        COCOClipDataset(split="val", root=sample_coco, embeddings=train_shards / "train_text_embeddings.pt")


def test_the_missing_cache_hint_is_a_whole_command(sample_coco, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        COCOClipDataset(split="val", root=sample_coco, embeddings=tmp_path / "none.pt")
    assert f"shardgen build --coco-root {sample_coco} --split val --out " in str(info.value)


def test_the_wids_dataset_prints_nothing(train_shards, tmp_path, capfd):
    from loaders import ShardIndexDataset

    ds = ShardIndexDataset(str(train_shards), cache_dir=str(tmp_path / "wids"))
    assert len(ds) == 48 and ds[0]["key"]
    assert capfd.readouterr() == ("", "")


def test_device_loader_on_cuda_without_a_gpu_is_one_clear_line(monkeypatch):
    from loaders import DeviceLoader
    from shardgen.format import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"CUDA is not available on this machine.*use \"cpu\""):
        DeviceLoader([], "cuda")
