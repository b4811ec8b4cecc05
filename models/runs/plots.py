"""Qualitative retrieval plots: one row per query (a caption or an image), its top-k results with scores.

Every picture is letterboxed into its square cell (aspect ratio kept, gray bars), never squashed.
"""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont

from shardgen.format.pictures import letterbox

THUMB = 128
PAD = 6
LABEL_W = 220
LABEL_H = 16  # the line under a thumbnail
LINE_H = 13  # a caption line (11 px font)
QUERY_LINE_H = 16  # a query line (13 px font)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _wrapped(item: object, *, query: bool) -> list[str]:
    return textwrap.wrap(f"query: {item}", 30)[:8] if query else textwrap.wrap(str(item), 20)[:9]


def _height(item: object, *, query: bool) -> int:
    """Pixels a cell needs: a thumbnail and its label line, or the wrapped text (plus the score line)."""
    if isinstance(item, Image.Image):
        return THUMB + LABEL_H
    return (len(_wrapped(item, query=query)) + (0 if query else 1)) * (QUERY_LINE_H if query else LINE_H) + 8


def retrieval_grid(rows: list[tuple[object, list[tuple[object, float]]]], *, title: str = "",
                   warning: str = "") -> Image.Image:
    """rows: (query, [(result, score), ...]); query/result are PIL images or strings (captions).

    Each row is as tall as its tallest cell (a thumbnail, or a caption's wrapped lines): caption boxes fit their
    text. `warning` is drawn in red under the title (e.g. that the text embeddings come from a random-init
    tower)."""
    k = max((len(r) for _, r in rows), default=1)
    heights = [max([_height(q, query=True)] + [_height(r, query=False) for r, _ in results]) for q, results in rows]
    top = (24 if title else 0) + (20 if warning else 0)
    img = Image.new("RGB", (LABEL_W + k * (THUMB + PAD) + PAD, top + sum(heights) + len(rows) * PAD + PAD), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    if title:
        draw.text((PAD, 4), title, fill="black", font=font)
    if warning:
        draw.text((PAD, top - 18), warning, fill=(190, 0, 0), font=small)
    y = top + PAD
    for (query, results), cell_h in zip(rows, heights):
        if isinstance(query, Image.Image):
            img.paste(letterbox(query, THUMB), (PAD, y))
            draw.text((PAD, y + THUMB + 2), "query image", fill="black", font=small)
        else:
            draw.multiline_text((PAD, y), "\n".join(_wrapped(query, query=True)), fill="black", font=font)
        for j, (res, score) in enumerate(results):
            x = LABEL_W + j * (THUMB + PAD)
            if isinstance(res, Image.Image):
                img.paste(letterbox(res, THUMB), (x, y))
                draw.text((x, y + THUMB + 2), f"{score:.3f}", fill="black", font=small)
            else:
                box_h = _height(res, query=False)
                draw.rectangle((x, y, x + THUMB, y + box_h - 4), outline=(200, 200, 200))
                draw.multiline_text((x + 3, y + 3), "\n".join(_wrapped(res, query=False) + [f"score {score:.3f}"]),
                                    fill="black", font=small)
        y += cell_h + PAD
    return img
