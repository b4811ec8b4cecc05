"""`BuildConfig`: every setting of `shardgen build`, with its default and its check, in one place.

The command line takes its defaults from here (never restated by hand), and the module imports no torch, so
`shardgen --help` answers at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TEXT_ENCODER = "openai/clip-vit-base-patch32"


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
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    encode_batch_size: int = 256
    device: str = "auto"
    limit: int | None = None
    embeddings_cache: Path | None = None
    dali_index: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "samples_per_shard", "max_shard_bytes", "workers", "encode_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def preprocess_record(self) -> dict:
        return {"image_size": self.image_size, "resize": "shorter_side_bicubic_antialias",
                "crop": "center" if self.crop else "none", "jpeg_quality": self.jpeg_quality,
                "jpeg_baseline": True, "jpeg_draft_decode": self.draft, "color": "RGB"}
