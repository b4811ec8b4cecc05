"""`shardgen sample`: a small, deterministic COCO-layout dataset (2014, or 2017's naming) whose captions truly
describe the images.

Each image is a 640×480 scene of coloured shapes over a textured background. Texture and sensor-like noise make
the JPEGs cost what photographs cost (≈100–250 KB at quality 90), so build and loader benchmarks see realistic
bytes. Captions name the shapes, colours, sizes, positions and background, 5 per image with a few 6s and 7s as in
real COCO, and include COCO's quirks (capitals, trailing blanks and newlines) that the build must clean. The 2017
layout holds the same images and captions under 2017's names (`train2017/000000123456.jpg`).

`coco_like=True` rehearses real COCO 2014 at scale: image sizes drawn from COCO's common sizes (landscape, portrait,
square), caption counts in COCO's proportions (5, with a 6th for ~0.3% of images and a 7th for a few), and every
caption unique (it names its photo), as COCO's 616,767 captions nearly all are, so caption dedup and the cache see
COCO's sizes. The default keeps the original fixed-size set, byte for byte.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 640, 480
COLORS = {
    "red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210), "yellow": (235, 215, 40),
    "purple": (140, 50, 170), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20),
}
BACKGROUNDS = {  # name → (top colour, bottom colour)
    "grass": ((120, 170, 90), (50, 110, 40)), "sky": ((150, 200, 250), (70, 130, 220)),
    "sand": ((235, 215, 170), (200, 170, 120)), "brick": ((170, 80, 60), (110, 50, 40)),
    "gray": ((170, 170, 170), (110, 110, 110)), "night": ((40, 40, 80), (10, 10, 30)),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 70, "large": 150}
COLUMNS = {"left": 0.27, "middle": 0.5, "right": 0.73}
ROWS = {"top": 0.3, "bottom": 0.7}


@dataclass(frozen=True)
class Thing:
    shape: str
    color: str
    size: str
    column: str
    row: str

    def phrase(self, *, with_size: bool = True) -> str:
        words = f"{self.size + ' ' if with_size else ''}{self.color} {self.shape}"
        return ("an " if words[0] in "aeiou" else "a ") + words


def _scene(rng: np.random.Generator) -> tuple[str, list[Thing]]:
    background = str(rng.choice(list(BACKGROUNDS)))
    n = int(rng.choice([1, 2, 2, 3]))
    cells = rng.permutation([(c, r) for c in COLUMNS for r in ROWS])[:n]
    things = [Thing(shape=str(rng.choice(SHAPES)), color=str(rng.choice(list(COLORS))),
                    size=str(rng.choice(list(SIZES))), column=str(c), row=str(r)) for c, r in cells]
    return background, things


def _captions(background: str, things: list[Thing], n: int, rng: np.random.Generator) -> list[str]:
    main, rest = things[0], things[1:]
    others = " and ".join(t.phrase() for t in rest)
    count = {1: "one shape", 2: "two shapes", 3: "three shapes"}[len(things)]
    pool = [
        f"{main.phrase()} on a {background} background" + (f" next to {others}" if rest else ""),
        f"{count} on {background}: " + ", ".join(t.phrase(with_size=False) for t in things),
        f"there is {main.phrase(with_size=False)} at the {main.row} {main.column} of the picture",
        f"a picture of {' and '.join(t.phrase() for t in things)}",
        f"{background} scene with {main.phrase()}" + (f" and {len(rest)} more" if rest else ""),
        f"the {main.shape} is {main.color} and {main.size}",
        f"{' and '.join(t.color for t in things)} shapes over a {background} texture",
    ]
    caps = pool[:n]
    quirks = rng.integers(0, 6, size=n)
    for i, q in enumerate(quirks):  # COCO captions come capitalized, with periods, blanks and newlines
        if q == 0:
            caps[i] = caps[i][0].upper() + caps[i][1:] + "."
        elif q == 1:
            caps[i] = caps[i] + " \n"
        elif q == 2:
            caps[i] = "  " + caps[i].capitalize()
    return caps


# COCO 2014's most common image sizes (w, h) and roughly how often they occur; the mean is close to COCO's.
COCO_SIZES = ((640, 480), (640, 427), (480, 640), (640, 640), (500, 375), (427, 640), (612, 612))
COCO_SIZE_P = (0.45, 0.25, 0.12, 0.05, 0.05, 0.05, 0.03)
COCO_EXTRA_CAPTION_P = (0.0028, 0.0002)  # a 6th caption, a 7th: 616,767 captions for 123,287 images


def _render(background: str, things: list[Thing], rng: np.random.Generator,
            size: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    width, height = size
    top, bottom = (np.array(c, dtype=np.float32) for c in BACKGROUNDS[background])
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + bottom * t + np.zeros((1, width, 3), np.float32)  # [H, W, 3] vertical gradient
    blobs = np.clip(rng.normal(128, 14, size=(6, 8, 3)), 0, 255).astype(np.uint8)  # low-frequency texture
    img += np.asarray(Image.fromarray(blobs).resize((width, height), Image.BICUBIC), dtype=np.float32) - 128.0
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for th in things:
        cx, cy, r = COLUMNS[th.column] * width, ROWS[th.row] * height, SIZES[th.size] / 2
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLORS[th.color]
        if th.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif th.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    arr = np.asarray(canvas, dtype=np.int16)
    arr = arr + rng.integers(-20, 21, size=arr.shape, dtype=np.int16)  # sensor-like grain: photo-like JPEG sizes
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _n_captions(index: int) -> int:
    return 7 if index % 23 == 5 else 6 if index % 9 == 4 else 5


def file_name_for(split: str, image_id: int, year: int) -> str:
    """COCO's image file name: `COCO_train2014_000000123456.jpg` (2014) or `000000123456.jpg` (2017)."""
    return f"COCO_{split}2014_{image_id:012d}.jpg" if year == 2014 else f"{image_id:012d}.jpg"


def _coco_like(image_id: int) -> tuple[tuple[int, int], int]:
    """(image size, caption count) for `coco_like` sets, from a stream of their own (the scene's stays as it was)."""
    rng = np.random.default_rng([image_id, 2015])
    size = COCO_SIZES[int(rng.choice(len(COCO_SIZES), p=COCO_SIZE_P))]
    u = rng.random()
    return size, 7 if u < COCO_EXTRA_CAPTION_P[1] else 6 if u < sum(COCO_EXTRA_CAPTION_P) else 5


def _make_one(args: tuple[int, int, str, str, bool]) -> dict:
    index, image_id, file_name, images_dir, coco_like = args
    rng = np.random.default_rng([image_id, 2014])  # the same picture in either year's layout
    background, things = _scene(rng)
    size, n_captions = _coco_like(image_id) if coco_like else ((WIDTH, HEIGHT), _n_captions(index))
    _render(background, things, rng, size).save(Path(images_dir) / file_name, quality=90)
    captions = _captions(background, things, n_captions, rng)
    if coco_like:  # unique like COCO's: the photo's number (after any trailing blank or newline, which stays)
        captions = [f"{c.rstrip()}, photo {image_id}{c[len(c.rstrip()):]}" for c in captions]
    return {"image_id": image_id, "file_name": file_name, "captions": captions, "width": size[0], "height": size[1]}


def make_sample(out_dir: str | Path, *, images: int = 200, val_images: int | None = None, seed: int = 0,
                workers: int = 1, progress: bool = False, year: int = 2014, coco_like: bool = False) -> Path:
    """Write `train<year>/`, `val<year>/` and `annotations/captions_{split}<year>.json` under out_dir (year 2014
    or 2017; `coco_like`: COCO's image sizes, caption counts and unique captions, see the module docstring)."""
    from tqdm.auto import tqdm

    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    if year not in (2014, 2017):
        raise ValueError(f"year must be 2014 or 2017, got {year}")
    val_images = max(1, images // 5) if val_images is None else val_images
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Sparse, unique ids like COCO's (which range up to ~581k); sorted so file order follows id order.
    ids = np.sort(rng.choice(np.arange(1, 600_000), size=images + val_images, replace=False))
    id_split = rng.permutation(len(ids))
    for split, chosen in (("train", np.sort(ids[id_split[:images]])), ("val", np.sort(ids[id_split[images:]]))):
        images_dir = out / f"{split}{year}"
        images_dir.mkdir(exist_ok=True)
        jobs = [(i, int(image_id), file_name_for(split, int(image_id), year), str(images_dir), coco_like)
                for i, image_id in enumerate(chosen)]
        bar = dict(total=len(jobs), desc=f"sample {split}", unit="img", disable=not progress)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                made = list(tqdm(pool.map(_make_one, jobs, chunksize=16), **bar))
        else:
            made = [_make_one(j) for j in tqdm(jobs, **bar)]
        annotations = {
            "info": {"description": f"shardgen synthetic COCO-{year}-layout sample", "version": "1.0"},
            "licenses": [],
            "images": [{"id": m["image_id"], "file_name": m["file_name"], "width": m["width"], "height": m["height"]}
                       for m in made],
            "annotations": [],
        }
        ann_id = 1
        for m in made:
            for cap in m["captions"]:
                annotations["annotations"].append({"id": ann_id, "image_id": m["image_id"], "caption": cap})
                ann_id += 1
        (out / "annotations" / f"captions_{split}{year}.json").write_text(json.dumps(annotations))
    return out
