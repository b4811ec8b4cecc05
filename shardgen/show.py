"""`shardgen show`: a PNG grid of images with their captions drawn underneath, plus dataset statistics.

This replaces the seed notebook's verification cells: a person looks at the grid and sees whether images and
captions belong together.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .format import MANIFEST_NAME, Manifest, iter_tar_samples, join, open_url, read_text

CELL = 224
TEXT_H = 96
PAD = 8


@dataclass
class Stats:
    n_images: int
    n_captions: int
    n_bytes: int
    n_shards: int
    captions_per_image: dict[int, int]

    def table(self) -> str:
        hist = ", ".join(f"{k}: {v}" for k, v in sorted(self.captions_per_image.items()))
        return (f"images {self.n_images}  captions {self.n_captions}  shards {self.n_shards}  "
                f"bytes {self.n_bytes / 1e6:.1f} MB\ncaptions per image: {hist}")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def render_grid(items: list[tuple[Image.Image, str]], *, columns: int = 4) -> Image.Image:
    """Images (any size, shown at 224×224) with their wrapped caption below each."""
    rows = (len(items) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (CELL + PAD) + PAD, rows * (CELL + TEXT_H + PAD) + PAD), "white")
    draw = ImageDraw.Draw(grid)
    font = _font(13)
    for i, (img, caption) in enumerate(items):
        x = PAD + (i % columns) * (CELL + PAD)
        y = PAD + (i // columns) * (CELL + TEXT_H + PAD)
        grid.paste(img.convert("RGB").resize((CELL, CELL)), (x, y))
        lines = textwrap.wrap(caption, width=32)[:6]
        draw.multiline_text((x, y + CELL + 3), "\n".join(lines), fill="black", font=font, spacing=2)
    return grid


def show(source: str, out_png: str | Path, *, n: int = 16, columns: int = 4) -> Stats:
    """Write a grid of the first `n` samples to `out_png` and return statistics for the whole set."""
    manifest = Manifest.from_json(read_text(join(source, MANIFEST_NAME)))
    items: list[tuple[Image.Image, str]] = []
    per_image: Counter[int] = Counter()
    for shard in manifest.shards:
        with open_url(join(source, shard.name)) as fh:
            for _, fields in iter_tar_samples(fh, source=shard.name):
                meta = json.loads(fields["json"])
                per_image[len(meta["captions"])] += 1
                if len(items) < n:
                    items.append((Image.open(io.BytesIO(fields["jpg"])), meta["captions"][0]))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    render_grid(items, columns=min(columns, max(1, len(items)))).save(out_png)
    return Stats(n_images=sum(per_image.values()), n_captions=sum(k * v for k, v in per_image.items()),
                 n_bytes=manifest.n_bytes, n_shards=len(manifest.shards), captions_per_image=dict(per_image))
