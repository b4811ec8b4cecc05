"""`BuildConfig`: every setting of `shardgen build`, with its default and its check, in one place; and how every
command line (`shardgen build`, `models.train`, `models.evaluate`) derives from its config dataclasses.

A command line takes its defaults from the dataclass (`field_default`, never restated by hand) and builds the
config from the options named like its fields (`config_from_options`). A bad value raises `ValueError` whose
message starts with the field's name; the command line turns it into a one-line `UserError` naming the option.
The module imports no torch, so `shardgen --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
import re
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TEXT_ENCODER = "openai/clip-vit-base-patch32"

# COCO's largest image is 640×640 (0.4 Mpx). 50 Mpx still admits any camera photo (a 45 Mpx full-frame sensor,
# an 8K frame) in a COCO-layout folder of one's own, and caps what one image process may decode at ~150 MB of RGB.
# A header claiming more is counted as `too_large` before anything is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000

# Karpathy's split file (`dataset_coco.json`) tags every COCO 2014 image train, restval, val or test; a --split
# with --karpathy picks one tag or, for the common 113k training set, train+restval.
# Karpathy's other split files (dataset_flickr30k.json, dataset_flickr8k.json) tag images train, val or test.
TAGS = ("train", "val", "test")
KARPATHY_SPLITS = {"train": ("train",), "restval": ("restval",), "train+restval": ("train", "restval"),
                   "val": ("val",), "test": ("test",)}


@dataclass(frozen=True)
class BuildConfig:
    coco_root: Path | str | None  # a COCO folder or URL (s3://...); None with --captions or a non-COCO split file
    split: str | None  # None only with --captions (every row of the table)
    out: Path | str  # a local folder, or a URL (s3://bucket/prefix) the shard tasks write to
    text_encoder: str = DEFAULT_TEXT_ENCODER
    image_size: int = 224
    crop: bool = True
    jpeg_quality: int = 90
    draft: bool = True
    samples_per_shard: int = 1000
    max_shard_bytes: int = 512 * 1024 * 1024
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    encode_batch_size: int = 256
    device: str = "auto"
    limit: int | None = None
    karpathy: Path | None = None  # Karpathy's dataset_coco.json: --split is one of its splits, images from 2014
    embeddings_cache: Path | None = None
    dali_index: bool = True  # <shard>.idx beside each shard: the loader seeks inside shards with it, DALI reads it
    progress: bool = True
    captions: Path | str | None = None  # an image-caption table (.jsonl, .csv, .parquet), images under image_root
    image_root: Path | str | None = None  # the folder (or URL) the table's or a non-COCO split file's images lie in
    webdataset: str | None = None  # webdataset tars (img2dataset's jpg + txt), a brace pattern of paths or URLs
    executor: str = "local"  # where tasks run: one of `sharding.executors.names()` (inline, local, ray)
    ray_address: str | None = None  # with executor ray: the cluster (default: RAY_ADDRESS, else a local Ray)
    staging: Path | None = None  # with an --out URL: the local work folder (lock, journal, caption cache)
    image_column: str = "image"  # a table's columns (--captions): the image path, its caption, its id, its split
    caption_column: str = "caption"
    id_column: str = "image_id"
    split_column: str = "split"
    source_options: dict[str, Any] = field(default_factory=dict)  # an input kind's options that are no field here

    def __post_init__(self) -> None:
        for name in ("image_size", "samples_per_shard", "max_shard_bytes", "max_image_pixels", "workers",
                     "encode_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        self.input_kind()  # exactly one input, checked by its kind (`sources.inputs`)
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.executor):  # `sharding.executors` knows which exist
            raise ValueError(f"executor must be the name of an executor (local, ray, ...), got {self.executor!r}")
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError("ray_address needs --executor ray")

    def input_kind(self):
        """The `sources.inputs.InputSpec` of the one input this config names; ValueError naming the field when
        it names none, several, or one with settings that do not go with it."""
        from .sources.inputs import select  # the input kinds' registry (no torch)

        return select(self)

    @property
    def dataset_split(self) -> str:
        """The name the shards, manifest and caption cache carry, as the input's kind names it: the split (`train`,
        `val2017`), for a Karpathy split of COCO `karpathy_<split>` (`karpathy_test`, `karpathy_train_restval`),
        for another Karpathy file `<dataset>_<split>` (`dataset_flickr30k.json` → `flickr30k_test`), for a table or
        webdataset input its --split or `all`."""
        return self.input_kind().dataset_split(self)

    def preprocess_record(self) -> dict:
        return {"image_size": self.image_size, "resize": "shorter_side_bicubic_antialias",
                "crop": "center" if self.crop else "none", "jpeg_quality": self.jpeg_quality,
                "jpeg_baseline": True, "jpeg_draft_decode": self.draft, "color": "RGB"}


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field `cls.<name>` (a factory's value for fields such as `workers`)."""
    spec = next(f for f in fields(cls) if f.name == name)
    if spec.default is not MISSING:
        return spec.default
    if spec.default_factory is not MISSING:
        return spec.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def build_default(name: str) -> Any:
    """The default of `BuildConfig.<name>`."""
    return field_default(BuildConfig, name)


def config_from_options(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
    """`cls` built from the options in `args` named like its fields (an option's `dest` is the field's name), and
    `values` (fields the options do not name one to one). A value the dataclass refuses is the user's to fix: its
    `ValueError` (whose message starts with the field's name) becomes a one-line `UserError` naming the option."""
    from .format.errors import UserError

    from_args = {f.name: getattr(args, f.name) for f in fields(cls) if f.init and hasattr(args, f.name)}
    try:
        return cls(**{**from_args, **values})
    except ValueError as exc:  # only the dataclass's own checks run here: nothing is read or computed
        name, _, rest = str(exc).partition(" ")
        if name in from_args:
            raise UserError(f"--{name.replace('_', '-')} {rest}") from None
        raise UserError(str(exc)) from None
