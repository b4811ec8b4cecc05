"""Retrieval pictures: caption boxes fit their text (no tall empty boxes), rows as tall as their tallest cell."""

from __future__ import annotations

from PIL import Image

from models.runs.plots import LABEL_H, PAD, THUMB, retrieval_grid


def test_caption_rows_are_as_tall_as_the_thumbnail_not_more():
    photo = Image.new("RGB", (640, 480), (0, 0, 200))
    rows = [(photo, [("a cat on a mat", 0.5), ("a dog", 0.4)])] * 3
    picture = retrieval_grid(rows)
    assert picture.height == 3 * (THUMB + LABEL_H + PAD) + PAD  # the old fixed 198 px cells: 3 × 204 + 6


def test_a_long_caption_gets_a_taller_row_than_a_short_one():
    long = "a very long caption that goes on and on about the many things in the picture " * 3
    short = retrieval_grid([("query", [("a cat", 0.5)])]).height
    tall = retrieval_grid([("query", [(long, 0.5)])]).height
    assert short < tall
