"""loaders: stream shardgen shards (local, HTTP, S3) into training as uint8 batches, normalized on the device.

The public API. The modules sit in folders that follow a batch: `plan/` (what an epoch reads) → `read/` (bytes
into records) → `shape/` (records into batches) → `handover/` (the epoch run by workers, the `ShardLoader` façade,
the device); `config.py`, `errors.py` and the map-style `coco_dataset.py` beside them.
"""

from .shape.augment import AUGMENTATIONS, Augment, Augmentation, CropFlip
from .coco_dataset import COCOClipDataset, clip_transform, collate_all_captions
from .config import LoaderConfig
from .handover.device import CLIP_MEAN, CLIP_STD, DeviceLoader, Normalize, decode_jpegs
from .errors import DecodeError, LoaderError, SourceError, StateError, WorkerError
from .read.indexed import ShardIndexDataset
from .handover.loader import ShardLoader, make_loader
from .plan.sources import ShardSet, resolve_source
from .handover.stream import ShardStream

__all__ = [
    "AUGMENTATIONS", "Augment", "Augmentation", "CropFlip",
    "CLIP_MEAN", "CLIP_STD", "COCOClipDataset", "DecodeError", "DeviceLoader", "LoaderConfig", "LoaderError",
    "Normalize", "ShardIndexDataset", "ShardLoader", "ShardSet", "ShardStream", "SourceError", "StateError",
    "WorkerError",
    "clip_transform", "collate_all_captions", "decode_jpegs", "make_loader", "resolve_source",
]
