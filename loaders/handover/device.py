"""The device step: move a uint8 batch to the device and normalize it there (CLIP mean/std).

uint8 crosses PCIe (4× less than float32) from pinned memory with `non_blocking=True`; on CUDA the copy and
normalization of batch n+1 run on a side stream while the model works on batch n. On CPU the same arithmetic runs
synchronously, so it is tested here. Optionally decodes raw JPEG bytes on the GPU (`make_loader(decode="gpu")`),
then applies the batch's augmentation (`loaders.shape.augment`) there, as the CPU decoder would have.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from shardgen.format.errors import UserError

from ..shape.augment import Augment, center
from ..errors import DecodeError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Normalize(nn.Module):
    """uint8 `[B, 3, H, W]` → `(x / 255 − mean) / std` in `dtype`, computed as one fused `x·a + b` on the device."""

    def __init__(self, mean=CLIP_MEAN, std=CLIP_STD, *, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        super().__init__()
        mean_t, std_t = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
        # (x/255 - m)/s = x * (1/(255 s)) + (-m/s): scale and shift precomputed in float64
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean_t / std_t).float().view(1, 3, 1, 1), persistent=False)
        self.dtype, self.channels_last = dtype, channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        x = torch.addcmul(self.shift, images.float(), self.scale)  # [B, 3, H, W] float32
        x = x.to(self.dtype)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)


def decode_jpegs(jpegs: list, *, device: torch.device, size: int | None = None, augment: Augment | None = None,
                 keys: list[str] | None = None) -> torch.Tensor:
    """Batched JPEG decode (nvJPEG on CUDA, libjpeg on CPU) → uint8 `[B, 3, S, S]`: each image augmented as
    `augment` says (`loaders.shape.augment`: what the CPU decoder gives), else center-cropped to `size`, else as
    stored. `jpegs`: uint8 tensors or bytes-like objects; `keys` name the images in errors."""
    from torchvision.io import ImageReadMode, decode_jpeg

    jpegs = [j if isinstance(j, torch.Tensor) else torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    dev = "cuda" if device.type == "cuda" else "cpu"
    images = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=dev)
    if augment is None and size is not None:
        augment = center(size, len(images))
    if augment is not None:
        out = []
        for i, img in enumerate(images):
            try:
                out.append(augment.tensor(img, i))
            except DecodeError as exc:  # a stored image smaller than the output size
                raise DecodeError(f"{keys[i] if keys else f'image {i}'}: {exc}") from None
        images = out
    return torch.stack(images).to(device)


class DeviceLoader:
    """Wrap a loader: yields batches with `image` normalized on `device` and tensors moved there.

    On CUDA, batch n+1 is copied and normalized on a side stream while batch n is in use (one batch of lookahead).
    """

    def __init__(self, loader: Iterable[dict], device: str | torch.device, *, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, mean=CLIP_MEAN, std=CLIP_STD) -> None:
        self.loader = loader
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"DeviceLoader(..., {str(device)!r}): CUDA is not available on this machine (torch "
                            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use \"cpu\", or "
                            "\"cuda\" if torch.cuda.is_available() else \"cpu\"")
        self.normalize = Normalize(mean, std, dtype=dtype, channels_last=channels_last).to(self.device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def _to_device(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            out[k] = v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        if "jpeg" in out:  # decode="gpu": decoded here, then augmented as the loader drew it
            out["image"] = decode_jpegs(out.pop("jpeg"), device=self.device, augment=out.pop("augment", None),
                                        keys=out.get("key"))
        out["image"] = self.normalize(out["image"])
        return out

    def __iter__(self) -> Iterator[dict]:
        if self.stream is None:
            for batch in self.loader:
                yield self._to_device(batch)
            return
        pending = None
        for batch in self.loader:
            with torch.cuda.stream(self.stream):
                ready = self._to_device(batch)
            if pending is not None:
                yield pending
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            for v in ready.values():  # tell the caching allocator these tensors are used on the main stream
                if isinstance(v, torch.Tensor):
                    v.record_stream(torch.cuda.current_stream(self.device))
            pending = ready
        if pending is not None:
            yield pending
