"""The augmentation stage: random crop, flip and output size are applied the same way whether the JPEGs are
decoded by the loader (CPU) or after it (`decode="gpu"`, here through `DeviceLoader(..., "cpu")`, the same code
path as on CUDA), drawn per batch so a resume replays them; shards built with `--no-crop` work under both; bad
`image_size` values and options the device path cannot honour are refused with one line naming the value."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch

from loaders import AUGMENTATIONS, DeviceLoader, LoaderConfig, make_loader

AUG = {"crop": "random", "flip": True, "image_size": 48, "shuffle": False, "seed": 3}
LEVEL = 1 / (255 * 0.26)  # one grey level in normalized units (about; CLIP's std is ~0.26-0.28)


def _images(loader, epoch: int) -> tuple[list[str], torch.Tensor]:
    loader.set_epoch(epoch)
    batches = list(DeviceLoader(loader, "cpu"))
    return [k for b in batches for k in b["key"]], torch.cat([b["image"] for b in batches])


def test_gpu_decode_gives_the_asked_size_and_new_crops_every_epoch(train_shards):
    loader = make_loader(str(train_shards), batch_size=8, decode="gpu", **AUG)
    keys0, first = _images(loader, 0)
    keys1, second = _images(loader, 1)
    assert first.shape == (48, 3, 48, 48) and keys0 == keys1
    differ = [not torch.equal(a, b) for a, b in zip(first, second)]
    assert sum(differ) > 40  # a 48-px window of 224 px, flipped half the time: nearly every image moves


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_cpu_and_device_decoding_apply_the_same_windows_and_flips(train_shards, workers):
    _, cpu = _images(make_loader(str(train_shards), batch_size=8, num_workers=workers, **AUG), 1)
    _, gpu = _images(make_loader(str(train_shards), batch_size=8, num_workers=workers, decode="gpu", **AUG), 1)
    # the same draws: libjpeg (torchvision) vs libjpeg-turbo round a pixel differently by a level or two at most;
    # another window or a flip would differ by tens of levels
    assert (cpu - gpu).abs().flatten(1).mean(dim=1).max() < 2 * LEVEL


def test_a_resumed_epoch_replays_the_device_augmentation(train_shards):
    full = make_loader(str(train_shards), batch_size=4, decode="gpu", **AUG)
    full.set_epoch(2)
    batches = list(DeviceLoader(full, "cpu"))
    resumed = make_loader(str(train_shards), batch_size=4, decode="gpu", **AUG)
    resumed.set_epoch(2, skip_batches=5)
    rest = list(DeviceLoader(resumed, "cpu"))
    assert len(rest) == len(batches) - 5
    assert all(a["key"] == b["key"] and torch.equal(a["image"], b["image"]) for a, b in zip(batches[5:], rest))


def test_no_crop_shards_work_under_gpu_decode(sample_shards):
    out = sample_shards("val", image_size=96, crop=False, samples_per_shard=4)
    opts = {"batch_size": 4, "shuffle": False, "crop": "random", "flip": True, "seed": 1}
    _, cpu = _images(make_loader(str(out), **opts), 0)
    _, gpu = _images(make_loader(str(out), decode="gpu", **opts), 0)
    assert gpu.shape == (12, 3, 96, 96)  # the shorter side, as stored; windows differ only along the longer one
    assert (cpu - gpu).abs().flatten(1).mean(dim=1).max() < 2 * LEVEL


@pytest.mark.parametrize("size", [0, -3, True, 48.0, "48"])
def test_image_size_must_be_a_positive_whole_number(size):
    with pytest.raises(ValueError, match=f"image_size must be a whole number of pixels >= 1 .*got {size!r}"):
        LoaderConfig(batch_size=4, image_size=size)


def test_a_tiny_image_size_is_not_blamed_on_the_data(train_shards):
    batch = next(iter(make_loader(str(train_shards), batch_size=4, image_size=1, shuffle=False)))
    assert batch["image"].shape == (4, 3, 1, 1)  # the center pixel, not "image claims 224×224 pixels"


def test_skipping_undecodable_jpegs_needs_cpu_decoding():
    with pytest.raises(ValueError, match="on_error='skip' needs decode='cpu'"):
        LoaderConfig(batch_size=4, decode="gpu", on_error="skip")


# --- a new augmentation through the public contract (loaders.shape.augment: Augmentation → Augment) -----------------
# The whole addition is this class pair and one entry in `AUGMENTATIONS`: decode, batches, device and the epoch
# do not change (recipe: docs/development.md, "How to add an augmentation").

class RandOps(NamedTuple):
    """A RandAugment-like augment: one uint8 op per image (0 identity, 1 invert, 2 solarize, 3 posterize)."""

    ops: list[int]
    levels: list[int]

    def keeps(self, i: int) -> bool:
        return self.ops[i] == 0

    def array(self, pixels: np.ndarray, i: int) -> np.ndarray:
        op, level = self.ops[i], self.levels[i]
        if op == 1:
            return 255 - pixels
        if op == 2:
            return np.where(pixels >= level, 255 - pixels, pixels)
        return pixels & np.uint8(0xF0) if op == 3 else pixels

    def tensor(self, image, i: int):
        op, level = self.ops[i], self.levels[i]
        if op == 1:
            return 255 - image
        if op == 2:
            return torch.where(image >= level, 255 - image, image)
        return image & 0xF0 if op == 3 else image


class RandOpsAugmentation:
    def __init__(self, size: int) -> None:
        self.size = size

    def draw(self, n: int, rng: np.random.Generator) -> RandOps:
        return RandOps(rng.integers(0, 4, n).tolist(), rng.integers(64, 192, n).tolist())


@pytest.fixture
def randops(monkeypatch):
    monkeypatch.setitem(AUGMENTATIONS, "randops", RandOpsAugmentation)
    return {**AUG, "augmentations": ("randops",)}


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_an_added_augmentation_runs_alike_on_cpu_and_device(train_shards, randops, workers):
    _, plain = _images(make_loader(str(train_shards), batch_size=8, num_workers=workers, **AUG), 1)
    _, cpu = _images(make_loader(str(train_shards), batch_size=8, num_workers=workers, **randops), 1)
    _, gpu = _images(make_loader(str(train_shards), batch_size=8, num_workers=workers, decode="gpu", **randops), 1)
    assert (cpu - gpu).abs().flatten(1).mean(dim=1).max() < 2 * LEVEL
    changed = (cpu - plain).abs().flatten(1).mean(dim=1) > 10 * LEVEL
    assert 20 < int(changed.sum()) < 48  # about three images in four get an op; identity leaves the rest


def test_an_added_augmentation_draws_after_the_crops(train_shards, randops):
    def draws(options):
        loader = make_loader(str(train_shards), batch_size=8, decode="gpu", **options)
        loader.set_epoch(1)
        return [b["augment"] for b in loader]

    chained = draws(randops)
    assert [c.steps[0] for c in chained] == draws(AUG)  # the crop and flip each seed always gave
    assert all(isinstance(c.steps[1], RandOps) for c in chained)


def test_an_unknown_augmentation_is_refused_by_name():
    with pytest.raises(ValueError, match=r"augmentations must be names from \[\], got \('randops',\)"):
        LoaderConfig(batch_size=4, augmentations=("randops",))
