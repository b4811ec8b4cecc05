"""shardgen: MS COCO 2014 → WebDataset tar shards with captions and frozen CLIP text embeddings."""

from .build import BuildConfig, BuildReport, build_shards
from .coco import CocoImage, find_split, load_split
from .encoder_init import init_encoder
from .errors import BadImage, UserError
from .sample import make_sample
from .schema import FIELDS, SCHEMA_VERSION, Manifest, ShardInfo, make_key
from .show import show
from .verify import VerifyReport, verify

__all__ = [
    "BadImage", "BuildConfig", "BuildReport", "CocoImage", "FIELDS", "Manifest", "SCHEMA_VERSION", "ShardInfo",
    "UserError", "VerifyReport", "build_shards", "find_split", "init_encoder", "load_split", "make_key", "make_sample",
    "show", "verify",
]
