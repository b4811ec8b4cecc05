"""Qualitative retrieval plots: one row per query (a caption or an image), its top-k results with scores.

Every picture is letterboxed into its square cell (aspect ratio kept, gray bars), never squashed.
"""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont, ImageOps

THUMB = 128
PAD = 6
LABEL_W = 220
TEXT_H = 70
LETTERBOX_FILL = (236, 236, 236)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def letterbox(img: Image.Image, size: int = THUMB) -> Image.Image:
    """`img` scaled to fit a `size`×`size` square with its aspect ratio kept, the rest filled."""
    return ImageOps.pad(img.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC, color=LETTERBOX_FILL)


def retrieval_grid(rows: list[tuple[object, list[tuple[object, float]]]], *, title: str = "",
                   warning: str = "") -> Image.Image:
    """rows: (query, [(result, score), ...]); query/result are PIL images or strings (captions).

    `warning` is drawn in red under the title (e.g. that the text embeddings come from a random-init tower)."""
    k = max((len(r) for _, r in rows), default=1)
    cell_h = THUMB + TEXT_H
    top = (24 if title else 0) + (20 if warning else 0)
    img = Image.new("RGB", (LABEL_W + k * (THUMB + PAD) + PAD, top + len(rows) * (cell_h + PAD) + PAD), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    if title:
        draw.text((PAD, 4), title, fill="black", font=font)
    if warning:
        draw.text((PAD, top - 18), warning, fill=(190, 0, 0), font=small)
    for i, (query, results) in enumerate(rows):
        y = top + PAD + i * (cell_h + PAD)
        if isinstance(query, Image.Image):
            img.paste(letterbox(query), (PAD, y))
            draw.text((PAD, y + THUMB + 2), "query image", fill="black", font=small)
        else:
            draw.multiline_text((PAD, y), "\n".join(textwrap.wrap(f"query: {query}", 30)[:8]), fill="black",
                                font=font)
        for j, (res, score) in enumerate(results):
            x = LABEL_W + j * (THUMB + PAD)
            if isinstance(res, Image.Image):
                img.paste(letterbox(res), (x, y))
                draw.text((x, y + THUMB + 2), f"{score:.3f}", fill="black", font=small)
            else:
                lines = textwrap.wrap(str(res), 20)[:9]
                draw.rectangle((x, y, x + THUMB, y + cell_h - 4), outline=(200, 200, 200))
                draw.multiline_text((x + 3, y + 3), "\n".join(lines + [f"score {score:.3f}"]), fill="black",
                                    font=small)
    return img
