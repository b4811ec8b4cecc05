"""The augmentation stage: the output size, a center or random crop window and a random horizontal flip, on uint8.

`Augmentation.draw` draws one batch's windows and flips from the epoch's augmentation generator (once per batch,
skipped batches included, so a resumed epoch replays the same draws); the result, an `Augment`, is applied the
same way wherever the JPEGs are decoded: by the CPU decoder into the batch's memory (`decode.decode_into`, with
`window`), or after the batch left the loader, by the device decoder (`device.decode_jpegs`, with
`crop_flip_tensor`), which finds it in `batch["augment"]`. Stored images of any shape at least the output size
work (shards built with `--no-crop` are cropped to a square window); a smaller one is a `DecodeError`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import DecodeError


class Augment(NamedTuple):
    """One batch's augmentation: images become `size`×`size` windows placed by `origins` ((y, x) in [0, 1]² per
    image; None: every window centered) and mirrored where `flips`. Plain lists: they travel in a batch through
    pickling and DataLoader's conversions unchanged."""

    size: int
    origins: list[tuple[float, float]] | None
    flips: list[bool]


class Augmentation:
    """The augmentation options of a loader: output `size`, `crop` ("center" or "random"), `flip`."""

    def __init__(self, *, size: int, crop: str, flip: bool) -> None:
        self.size, self.random_crop, self.flip = size, crop == "random", flip

    def draw(self, n: int, rng: np.random.Generator) -> Augment:
        """The draws for a batch of n images (the same numbers, in the same order, as the loader always drew)."""
        origins = rng.random((n, 2)).tolist() if self.random_crop else None
        flips = (rng.random(n) < 0.5).tolist() if self.flip else [False] * n
        return Augment(self.size, origins, flips)


def window(h: int, w: int, size_h: int, size_w: int, origin: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(top, left) of the `size_h`×`size_w` window of an `h`×`w` image placed by `origin` (0.5, 0.5: center).
    Raises DecodeError when the image is smaller than the window."""
    if h < size_h or w < size_w:
        raise DecodeError(f"image {w}×{h} is smaller than the output size {size_w}×{size_h}")
    return int(round((h - size_h) * origin[0])), int(round((w - size_w) * origin[1]))


def crop_flip_tensor(image, augment: Augment, i: int):
    """Image `i` of the batch (a `[3, H, W]` uint8 tensor, on any device) as its `augment` window, flipped if
    drawn so: what the CPU decoder writes for the same draws."""
    size = augment.size
    h, w = image.shape[-2:]
    top, left = window(h, w, size, size, augment.origins[i] if augment.origins is not None else (0.5, 0.5))
    image = image[:, top:top + size, left:left + size]
    return image.flip(-1) if augment.flips[i] else image
