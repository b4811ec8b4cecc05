"""The augmentation stage and its contract: an `Augmentation` draws one batch's numbers, the `Augment` it returns
applies them to each image, on a numpy array (the CPU decoder) or on a tensor (the device decoder), the same way.

The loader draws once per batch from the epoch's `augment` stream (`loaders.plan.seeds`; skipped batches included, so a
resumed epoch replays the same draws) and hands the `Augment` to whichever decoder runs: the CPU decoder
(`decode.decode_into`, into the batch's memory) or, with `decode="gpu"`, the device decoder (`device.decode_jpegs`),
which finds it in `batch["augment"]`. Neither looks inside it.

`CropFlip` is the one every loader has: the output size, a center or random crop window and a random horizontal
flip, on uint8. Stored images of any shape at least the output size work (shards built with `--no-crop` are
cropped to a square window); a smaller one is a `DecodeError`. Further augmentations are named in
`LoaderConfig(augmentations=(...))` and looked up in `AUGMENTATIONS`; each draws from a generator of its own
spawned from the batch's (so existing seeds keep their crops) and is applied to the cropped image. Recipe: docs/development.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np

from ..errors import DecodeError


class Augment(Protocol):
    """One batch's drawn augmentation, applied image by image. Values travel in a batch through pickling and
    DataLoader's conversions: hold plain lists and numbers (a NamedTuple of them is what DataLoader keeps)."""

    def keeps(self, i: int) -> bool:
        """True when image `i`, stored at the output size, comes out as stored (the CPU decoder then writes it
        straight into the batch, without a copy)."""

    def array(self, pixels: np.ndarray, i: int) -> np.ndarray:
        """Image `i` as decoded (`[H, W, 3]` uint8) → its output (`[S, S, 3]` uint8; a view is fine)."""

    def tensor(self, image, i: int):
        """Image `i` as a `[3, H, W]` uint8 tensor (any device) → its output `[3, S, S]`: what `array` gives."""


class Augmentation(Protocol):
    """An augmentation option of a loader: draws the numbers of a batch of `n` images from `rng`."""

    def draw(self, n: int, rng: np.random.Generator) -> Augment:
        ...


# Extra augmentations by name, for `LoaderConfig(augmentations=(name, ...))`: each a factory taking the output
# size. Applied after the crop and flip, in the order named.
AUGMENTATIONS: dict[str, Callable[[int], Augmentation]] = {}


def window(h: int, w: int, size_h: int, size_w: int, origin: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(top, left) of the `size_h`×`size_w` window of an `h`×`w` image placed by `origin` (0.5, 0.5: center).
    Raises DecodeError when the image is smaller than the window."""
    if h < size_h or w < size_w:
        raise DecodeError(f"image {w}×{h} is smaller than the output size {size_w}×{size_h}")
    return int(round((h - size_h) * origin[0])), int(round((w - size_w) * origin[1]))


class CropFlip(NamedTuple):
    """A batch's crop and flip: images become `size`×`size` windows placed by `origins` ((y, x) in [0, 1]² per
    image; None: every window centered) and mirrored where `flips`."""

    size: int
    origins: list[tuple[float, float]] | None
    flips: list[bool]

    def keeps(self, i: int) -> bool:
        return not self.flips[i]  # an image of the output size has one window, wherever its origin

    def _window(self, h: int, w: int, i: int) -> tuple[int, int]:
        return window(h, w, self.size, self.size, self.origins[i] if self.origins is not None else (0.5, 0.5))

    def array(self, pixels: np.ndarray, i: int) -> np.ndarray:
        top, left = self._window(*pixels.shape[:2], i)
        cropped = pixels[top:top + self.size, left:left + self.size]  # [S, S, 3]
        return cropped[:, ::-1] if self.flips[i] else cropped

    def tensor(self, image, i: int):
        top, left = self._window(*image.shape[-2:], i)
        image = image[:, top:top + self.size, left:left + self.size]  # [3, S, S]
        return image.flip(-1) if self.flips[i] else image


def center(size: int, n: int) -> CropFlip:
    """n images center-cropped to `size`, none flipped."""
    return CropFlip(size, None, [False] * n)


class CropFlipAugmentation:
    """The loader's own options: output `size`, `crop` ("center" or "random"), `flip`."""

    def __init__(self, *, size: int, crop: str, flip: bool) -> None:
        self.size, self.random_crop, self.flip = size, crop == "random", flip

    def draw(self, n: int, rng: np.random.Generator) -> CropFlip:
        """The draws for a batch of n images (the same numbers, in the same order, as the loader always drew)."""
        origins = rng.random((n, 2)).tolist() if self.random_crop else None
        flips = (rng.random(n) < 0.5).tolist() if self.flip else [False] * n
        return CropFlip(self.size, origins, flips)


class Chain(NamedTuple):
    """Augments applied one after the other (the crop and flip first)."""

    steps: tuple

    def keeps(self, i: int) -> bool:
        return all(step.keeps(i) for step in self.steps)

    def array(self, pixels: np.ndarray, i: int) -> np.ndarray:
        for step in self.steps:
            pixels = step.array(pixels, i)
        return pixels

    def tensor(self, image, i: int):
        for step in self.steps:
            image = step.tensor(image, i)
        return image


class ChainAugmentation:
    """The crop and flip, then further augmentations. The crop and flip draw from the generator they are given, as
    they always did; each further augmentation draws from a child generator of its own (`Generator.spawn`: the
    parent's numbers do not move), so adding one changes no batch's crops."""

    def __init__(self, base: Augmentation, extras: list[Augmentation]) -> None:
        self.base, self.extras = base, extras
        self._parent: np.random.Generator | None = None
        self._children: list[np.random.Generator] = []

    def draw(self, n: int, rng: np.random.Generator) -> Chain:
        if rng is not self._parent:
            self._parent, self._children = rng, rng.spawn(len(self.extras))
        return Chain((self.base.draw(n, rng), *(part.draw(n, child) for part, child in zip(self.extras,
                                                                                          self._children))))


def make_augmentation(*, size: int, crop: str, flip: bool, extra: tuple[str, ...] = ()) -> Augmentation:
    """A loader's augmentation: the crop and flip, then the `extra` ones by name (`AUGMENTATIONS`)."""
    base = CropFlipAugmentation(size=size, crop=crop, flip=flip)
    if not extra:
        return base  # its augments are plain `CropFlip`s, as every loader's were
    return ChainAugmentation(base, [AUGMENTATIONS[name](size) for name in extra])
