"""The on-disk contract that the shard writer (`shardgen`) and every reader (`loaders`, verify, show, export)
import: names and constants, the manifest (checked, not trusted), `.npy` members, the rules a sample must follow
(`schema`: every field of a sample, named once; `record`: checked reading), the one tar reader, storage (local paths and fsspec URLs, passwords redacted from every message), the
caption embedding cache and the COCO folder layout.

Imports only the standard library, numpy and fsspec, so `import shardgen.format` (and `shardgen --help`) pull in
no torch.
"""

from .captions import embeddings_cache_path, load_embeddings_cache
from .errors import DataError, FormatError, SchemaError, TarFormatError, UserError
from .manifest import (
                    Manifest,
                    ShardInfo,
                    load_manifest,
                    read_manifest,
                    sizes_json,
                    wids_index_json,
)
from .names import (
                    EMBED_DIM,
                    EMBED_DTYPE,
                    FORMAT_NAME,
                    MANIFEST_NAME,
                    MAX_IMAGE_ID,
                    SCHEMA_VERSION,
                    SIZES_NAME,
                    WIDS_INDEX_NAME,
                    is_shard_name,
                    make_key,
                    shard_name,
)
from .npy import decode_npy, encode_npy, npy_layout
from .record import iter_checked_samples, parse_meta, parse_sample
from .schema import FIELDS, SCHEMA, Field, Sample, SampleMeta, Schema
from .storage import (
                    access_error,
                    client_errors,
                    is_remote,
                    RefusedFile,
                    join,
                    open_at,
                    open_local,
                    open_url,
                    protocols,
                    read_bytes,
                    read_local,
                    read_text,
                    redact,
                    with_timeouts,
)
from .tar import iter_sample_groups, iter_samples, iter_tar_samples, split_member_name

__all__ = [
                    "EMBED_DIM",
                    "EMBED_DTYPE",
                    "FIELDS",
                    "FORMAT_NAME",
                    "MAX_IMAGE_ID",
                    "MANIFEST_NAME",
                    "SCHEMA_VERSION",
                    "SIZES_NAME",
                    "WIDS_INDEX_NAME",
                    "DataError",
                    "FormatError",
                    "Manifest",
                    "SCHEMA",
                    "Field",
                    "Sample",
                    "RefusedFile",
                    "SampleMeta",
                    "Schema",
                    "SchemaError",
                    "ShardInfo",
                    "TarFormatError",
                    "UserError",
                    "access_error",
                    "client_errors",
                    "decode_npy",
                    "embeddings_cache_path",
                    "encode_npy",
                    "is_remote",
                    "is_shard_name",
                    "iter_checked_samples",
                    "iter_sample_groups",
                    "iter_samples",
                    "iter_tar_samples",
                    "join",
                    "load_embeddings_cache",
                    "load_manifest",
                    "make_key",
                    "npy_layout",
                    "open_at",
                    "open_local",
                    "open_url",
                    "parse_meta",
                    "parse_sample",
                    "protocols",
                    "read_bytes",
                    "read_local",
                    "read_manifest",
                    "read_text",
                    "redact",
                    "shard_name",
                    "sizes_json",
                    "split_member_name",
                    "wids_index_json",
                    "with_timeouts",
]
