from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from loaders import COCOClipDataset, ShardIndexDataset, collate_all_captions

from ..helpers import read_all


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


def _mapped_files() -> set[str]:
    with open("/proc/self/maps") as fh:
        return {line.split(maxsplit=5)[5].strip() for line in fh if len(line.split(maxsplit=5)) == 6}


class _MapProbe(torch.utils.data.Dataset):
    """Reports, from inside a DataLoader worker, whether the cache file is mapped there and the table reads right."""

    def __init__(self, ds: COCOClipDataset, cache: str) -> None:
        self.ds, self.cache = ds, cache

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        total = self.ds.embeddings.float().sum()  # touches every row of the table
        return {"mapped": self.cache in _mapped_files(), "sum": total}


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc (Linux)")
def test_embedding_table_is_memory_mapped_in_workers(sample_coco, train_shards):
    cache = str((train_shards / "train_text_embeddings.pt").resolve())
    ds = COCOClipDataset("train", root=sample_coco, embeddings=cache)
    assert cache in _mapped_files()  # the table is the file's pages, not a copy read into memory
    loader = DataLoader(_MapProbe(ds, cache), batch_size=1, num_workers=2)
    out = list(loader)
    assert all(bool(b["mapped"]) for b in out)
    assert all(torch.allclose(b["sum"][0], ds.embeddings.float().sum()) for b in out)  # workers sum on 1 thread


def test_old_cache_without_mapping_support_still_reads(sample_coco, train_shards, tmp_path):
    """A cache written the way every version so far wrote it (torch.save zip, v1 keys) reads, rows intact."""
    data = torch.load(train_shards / "train_text_embeddings.pt", weights_only=True)
    old = tmp_path / "old.pt"
    torch.save(data, old)
    ds = COCOClipDataset("train", root=sample_coco, embeddings=old, return_all_captions=True)
    item = ds[5]
    rows = [data["texts"].index(c) for c in data["captions"][5]]
    assert item["captions"] == data["captions"][5]
    assert torch.equal(item["text_embeddings"], data["embeddings"][rows].float())


@pytest.mark.parametrize("name", ["/etc/hostname", "../outside.jpg", "sub/../../outside.jpg", "C:\\x.jpg"])
def test_cache_file_names_leaving_the_image_folder_are_refused(sample_coco, train_shards, tmp_path, name):
    from loaders.errors import SourceError

    cache = torch.load(train_shards / "train_text_embeddings.pt", weights_only=True)
    cache["file_names"] = [name, *cache["file_names"][1:]]
    crafted = tmp_path / "crafted.pt"
    torch.save(cache, crafted)
    with pytest.raises(SourceError, match="would leave the image folder"):
        COCOClipDataset("train", root=sample_coco, embeddings=crafted)


def test_images_are_read_through_the_one_opener(sample_coco, train_shards, tmp_path):
    """A link out of the image folder (or a FIFO) in place of an image is refused, not read."""
    import shutil

    from shardgen.format import RefusedFile

    root = tmp_path / "coco"
    shutil.copytree(sample_coco, root, symlinks=True)
    ds = COCOClipDataset("train", root=root, embeddings=train_shards / "train_text_embeddings.pt")
    first = ds.images_dir / ds._file_names[0]
    outside = tmp_path / "outside.jpg"
    shutil.move(first, outside)
    first.symlink_to(outside)
    with pytest.raises(RefusedFile, match="leads outside"):
        ds[0]
