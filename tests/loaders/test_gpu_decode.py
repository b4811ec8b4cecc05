"""`decode="gpu"` on CUDA: nvJPEG's pixels against the CPU decode of the same shards (the CPU path of the same code
is `test_stream.py::test_gpu_decode_path_falls_back_to_cpu`)."""

from __future__ import annotations

import pytest
import torch

from loaders import DeviceLoader, make_loader

# nvJPEG and libjpeg-turbo differ in IDCT and chroma upsampling; torchvision holds its CUDA decoder to a mean
# absolute difference below 2 grey levels per image against its CPU decoder, and so do we.
MEAN_LEVELS = 2.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decode_pixels_are_within_two_grey_levels_of_the_cpu_decode(train_shards):
    gpu = DeviceLoader(make_loader(str(train_shards), batch_size=8, shuffle=False, decode="gpu"), "cuda")
    cpu = DeviceLoader(make_loader(str(train_shards), batch_size=8, shuffle=False), "cuda")
    worst, n = 0.0, 0
    for a, b in zip(gpu, cpu):
        assert a["key"] == b["key"] and a["image"].shape == b["image"].shape and a["image"].is_cuda
        levels = (a["image"] - b["image"]).abs() / gpu.normalize.scale  # normalized units → grey levels
        per_image = levels.flatten(1).mean(dim=1)  # [B]
        worst, n = max(worst, per_image.max().item()), n + len(per_image)
    print(f"decode='gpu' vs CPU decode: worst mean |Δ| per image {worst:.2f} grey levels over {n} images")
    assert n == 48 and worst < MEAN_LEVELS


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decode_applies_the_loaders_crops_and_flips_on_the_device(train_shards):
    """The augmentation drawn by the loader, applied after nvJPEG: the same windows and flips as the CPU decoder."""
    opts = {"batch_size": 8, "shuffle": False, "crop": "random", "flip": True, "image_size": 48, "seed": 3}
    gpu = DeviceLoader(make_loader(str(train_shards), decode="gpu", **opts), "cuda")
    cpu = DeviceLoader(make_loader(str(train_shards), **opts), "cuda")
    worst, n = 0.0, 0
    for a, b in zip(gpu, cpu):
        assert a["image"].shape == (8, 3, 48, 48) and a["image"].is_cuda
        levels = ((a["image"] - b["image"]).abs() / gpu.normalize.scale).flatten(1).mean(dim=1)  # [B]
        worst, n = max(worst, levels.max().item()), n + len(levels)
    assert n == 48 and worst < MEAN_LEVELS
