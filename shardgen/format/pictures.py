"""How a picture a person looks at is fitted into a square cell: `shardgen show`'s grid and `models.evaluate`'s
retrieval pictures both letterbox (aspect ratio kept, light gray bars, never squashed), so they live here, at the
bottom layer both import. PIL is imported on the first call: the format layer loads no imaging library when
imported."""

from __future__ import annotations

LETTERBOX_FILL = (236, 236, 236)  # light gray bars: the picture's own edges stay visible on the white page


def letterbox(img, size: int, *, fill: tuple[int, int, int] = LETTERBOX_FILL):
    """`img` (a PIL image) scaled to fit a `size`×`size` square, aspect ratio kept, the rest filled."""
    from PIL import Image, ImageOps

    return ImageOps.pad(img.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC, color=fill)
