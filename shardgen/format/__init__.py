"""The on-disk contract that the shard writer (`shardgen`) and every reader (`loaders`, verify, show, export)
import: names and constants, the manifest (checked, not trusted), `.npy` members, the rules a sample must follow
(`schema`: every field of a sample, named once; `record`: checked reading), the one tar reader, storage (local
paths and fsspec URLs), what may be printed (`redact`: no password in any message; `printable_name`: no control
character), atomic writes that follow no link, the caption embedding cache and the COCO folder layout.

Imports only the standard library, numpy and fsspec, so `import shardgen.format` (and `shardgen --help`) pull in
no torch.
"""

from .atomic import open_append, open_atomic, open_fresh, write_bytes_atomic, write_text_atomic
from .captions import embeddings_cache_path, load_embeddings_cache
from .errors import USER_ERRNOS, DataError, FormatError, SchemaError, TarFormatError, UserError
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
                    parse_decimal,
                    shard_name,
)
from .npy import decode_npy, encode_npy, npy_layout
from .redact import has_secret, printable_name, redact, redact_fields
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
                    "USER_ERRNOS",
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
                    "parse_decimal",
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
                    "write_text_atomic",
                    "write_bytes_atomic",
                    "redact_fields",
                    "printable_name",
                    "open_atomic",
                    "open_fresh",
                    "open_append",
                    "has_secret",
                    "with_timeouts",
]
