"""shardgen: MS COCO 2014 → WebDataset tar shards with captions and frozen CLIP text embeddings.

The public API is re-exported lazily (PEP 562): `import shardgen` and `import shardgen.format` load no torch, so
the command line answers `--help` at once and the loader's workers do not carry the builder.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BuildConfig": "config", "BuildReport": "sharding.pipeline", "build_shards": "sharding.pipeline",
    "ImageRecord": "sources.record", "CocoImage": "sources.coco", "load_split": "sources.coco", "find_split": "format.coco_folders",
    "init_encoder": "text.random_init", "BadImage": "errors", "UserError": "errors",
    "make_sample": "sources.synthetic", "FIELDS": "format", "SCHEMA_VERSION": "format", "Manifest": "format",
    "ShardInfo": "format", "make_key": "format", "show": "publish.show", "VerifyReport": "publish.verify", "verify": "publish.verify",
    "DataError": "errors", "build_and_upload": "publish.upload",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shardgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
