import pytest
import torch
from torch.utils.data import DataLoader

from loaders import COCOClipDataset, ShardIndexDataset, collate_all_captions

from ..shardgen.helpers import read_all


def test_seed_api_on_raw_folder(sample_coco, train_shards):
    ds = COCOClipDataset("train", root=sample_coco, embeddings=train_shards / "train_text_embeddings.pt")
    assert len(ds) == 48
    item = ds[0]
    assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.float32
    assert item["text_embedding"].shape == (512,) and isinstance(item["caption"], str)
    assert isinstance(item["image_id"], int)
    truth = dict(read_all(train_shards))[f"{item['image_id']:012d}"]
    j = truth["meta"]["captions"].index(item["caption"])
    assert torch.allclose(item["text_embedding"], torch.from_numpy(truth["npy"][j]).float())
    captions = {ds[0]["caption"] for _ in range(60)}
    assert captions == set(truth["meta"]["captions"])  # random caption per call
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 224, 224) and batch["text_embedding"].shape == (4, 512)


def test_seed_api_all_captions(sample_coco, train_shards):
    ds = COCOClipDataset("train", root=sample_coco, embeddings=train_shards / "train_text_embeddings.pt",
                         return_all_captions=True)
    item = ds[3]
    assert item["text_embeddings"].shape == (len(item["captions"]), 512)
    batch = collate_all_captions([ds[i] for i in range(len(ds))])
    assert batch["caption_mask"].sum() == sum(len(c) for c in batch["captions"])


def test_missing_embedding_cache(sample_coco, tmp_path):
    with pytest.raises(FileNotFoundError, match="shardgen build"):
        COCOClipDataset("val", root=sample_coco, embeddings=tmp_path / "none.pt")


def test_random_access_through_wids_index(train_shards, tmp_path):
    ds = ShardIndexDataset(str(train_shards), cache_dir=str(tmp_path / "wids"))
    truth = read_all(train_shards)
    assert len(ds) == len(truth) == 48
    for i in (0, 9, 10, 47, 23):
        item = ds[i]
        assert item["key"] == truth[i][0] and item["captions"] == truth[i][1]["meta"]["captions"]
        assert item["image"].shape == (3, 224, 224)
