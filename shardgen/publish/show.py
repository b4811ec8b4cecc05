"""`shardgen show`: a PNG grid of images with their captions drawn underneath, plus dataset statistics.

This replaces the seed notebook's verification cells: a person looks at the grid and sees whether images and
captions belong together.
"""

from __future__ import annotations

import io
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..format import SchemaError, UserError, iter_checked_samples, join, load_manifest, open_atomic, redact
from ..format.names import MAX_STORED_IMAGE_PIXELS
from ..format.pictures import letterbox

CELL = 224
TEXT_H = 96
PAD = 8
WRAP, LINES = 32, 6  # caption characters per line, lines per caption
CAPTION_CHARS = WRAP * LINES + 1  # enough to fill the lines and to show that the caption goes on


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
    """Images (any size, letterboxed into 224×224: aspect ratio kept) with their wrapped caption below each (at most
    6 lines)."""
    if columns < 1:
        raise UserError(f"columns must be at least 1 (got {columns})")
    rows = (len(items) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (CELL + PAD) + PAD, rows * (CELL + TEXT_H + PAD) + PAD), "white")
    draw = ImageDraw.Draw(grid)
    font = _font(13)
    for i, (img, caption) in enumerate(items):
        x = PAD + (i % columns) * (CELL + PAD)
        y = PAD + (i // columns) * (CELL + TEXT_H + PAD)
        grid.paste(letterbox(img, CELL), (x, y))
        lines = textwrap.wrap(caption[:CAPTION_CHARS], width=WRAP)[:LINES]  # cut first: wrapping is O(length)
        draw.multiline_text((x, y + CELL + 3), "\n".join(lines), fill="black", font=font, spacing=2)
    return grid


def _thumbnail(jpg, where: str) -> Image.Image:
    """The sample's image decoded at about the grid's cell size. Raises SchemaError naming `where`."""
    problem = None
    try:
        img = Image.open(io.BytesIO(jpg))
        if img.width * img.height > MAX_STORED_IMAGE_PIXELS:  # judged on the header, before any decoding
            problem = f"image claims {img.width}x{img.height} pixels"
        else:
            img.draft("RGB", (CELL, CELL))  # JPEG: decode at a reduced scale
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        problem = f"image does not decode ({exc})"
    if problem is not None:
        raise SchemaError(f"{where}: {problem}")
    return img


def show(source: str, out_png: str | Path, *, n: int = 16, columns: int = 4) -> Stats:
    """Write a grid of the first `n` samples to `out_png` and return statistics for the whole set.

    Every sample is checked by the format's rules (`format.parse_sample`); the first that breaks one stops the
    run with a `SchemaError` naming its shard and key (run `shardgen verify` to list them all), as does a shard
    holding another number of samples than the manifest says. Bad options and
    an unreadable source raise `UserError`."""
    if n < 1:
        raise UserError(f"n must be at least 1 (got {n})")
    if columns < 1:
        raise UserError(f"columns must be at least 1 (got {columns})")
    manifest = load_manifest(source)
    items: list[tuple[Image.Image, str]] = []
    per_image: Counter[int] = Counter()
    per_shard: Counter[str] = Counter()
    for record in iter_checked_samples(source, manifest):
        captions = record.captions
        per_image[len(captions)] += 1
        per_shard[record.source] += 1
        if len(items) < n:
            items.append((_thumbnail(record.jpg, f"{record.source}: {record.key}"), captions[0]))
    for shard in manifest.shards:  # statistics of a manifest that lies about its shards would lie too
        if per_shard[shard.name] != shard.n_samples:
            raise SchemaError(f"{redact(join(source, shard.name))}: holds {per_shard[shard.name]} samples, its "
                              f"manifest says {shard.n_samples}")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with open_atomic(out_png) as fh:  # a reader of the PNG sees the old grid or the new one
        render_grid(items, columns=min(columns, max(1, len(items)))).save(fh, format="PNG")
    return Stats(n_images=sum(per_image.values()), n_captions=sum(k * v for k, v in per_image.items()),
                 n_bytes=manifest.n_bytes, n_shards=len(manifest.shards), captions_per_image=dict(per_image))
