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
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TEXT_ENCODER = "openai/clip-vit-base-patch32"

# COCO's largest image is 640×640 (0.4 Mpx). 50 Mpx still admits any camera photo (a 45 Mpx full-frame sensor,
# an 8K frame) in a COCO-layout folder of one's own, and caps what one image process may decode at ~150 MB of RGB.
# A header claiming more is counted as `too_large` before anything is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000

# Karpathy's split file (`dataset_coco.json`) tags every COCO 2014 image train, restval, val or test; a --split
# with --karpathy picks one tag or, for the common 113k training set, train+restval.
KARPATHY_SPLITS = {"train": ("train",), "restval": ("restval",), "train+restval": ("train", "restval"),
                   "val": ("val",), "test": ("test",)}


@dataclass(frozen=True)
class BuildConfig:
    coco_root: Path
    split: str
    out: Path
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
    dali_index: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "samples_per_shard", "max_shard_bytes", "max_image_pixels", "workers",
                     "encode_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.karpathy is None and self.split in ("restval", "train+restval", "test"):
            raise ValueError(f"split {self.split!r} is one of Karpathy's splits: it needs the split file "
                             "(--karpathy dataset_coco.json)")
        if self.karpathy is not None and self.split not in KARPATHY_SPLITS:
            raise ValueError(f"split must be one of {', '.join(KARPATHY_SPLITS)} with a Karpathy split file, "
                             f"got {self.split!r}")

    @property
    def dataset_split(self) -> str:
        """The name the shards, manifest and caption cache carry: the split (`train`, `val2017`), or for a
        Karpathy split `karpathy_<split>` (`karpathy_test`, `karpathy_train_restval`)."""
        if self.karpathy is None:
            return self.split
        return "karpathy_" + self.split.replace("+", "_")

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
