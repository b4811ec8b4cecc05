"""loaders: stream shardgen shards (local, HTTP, S3) into training as uint8 batches, normalized on the device."""

from .coco_dataset import COCOClipDataset, clip_transform, collate_all_captions
from .gpu import CLIP_MEAN, CLIP_STD, DeviceLoader, Normalize, decode_jpegs
from .indexed import ShardIndexDataset
from .plan import Span, plan_worker
from .sources import ShardSet, SourceError, resolve_source
from .stream import LoaderConfig, LoaderError, ShardLoader, ShardStream, make_loader

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "COCOClipDataset", "DeviceLoader", "LoaderConfig", "LoaderError", "Normalize",
    "ShardIndexDataset", "ShardLoader", "ShardSet", "ShardStream", "SourceError", "Span", "clip_transform",
    "collate_all_captions", "decode_jpegs", "make_loader", "plan_worker", "resolve_source",
]
