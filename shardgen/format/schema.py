"""The sample schema: every member a sample holds, named once, with what it holds, how the writer encodes it, how
a reader decodes it and the rules its value must follow (ffcv's `fields/*` idea: one entry per field).

A field owns both ends of its member. The build end: `build(record, products)` gives its value from the input
record and what the build made of it (`products`: the preprocessed image, the caption embeddings), and `encode`
its bytes. The loader end: `decode` and `check` (every reader), then `select` (the value a batch carries for the
chosen caption) and `batch` (a batch's values as one array). The build (`sharding.pack` through `Schema.build`),
the writer (`Schema.encode`), every checked reader (`format.record.parse_sample`: verify, show, export) and the
loader's parser and collate (`loaders.read.records`, `loaders.shape.batches`) loop over `SCHEMA`; the loader decodes the core
fields (jpg, json, npy, txt) by a faster path of its own that applies the same rules. Adding a field is one
`Field` here plus its tests (recipe: docs/development.md, "The sample schema"). A reader looks `SCHEMA` up when
it starts, not at import, so a test can register an extra field in a copy (`SCHEMA.with_field(...)`).

Readers accept members no field names (a newer writer's optional field): a sample must hold every field's
member, and is not refused for holding more, so an optional field needs no new `SCHEMA_VERSION`.

Fields are decoded in schema order and each check sees the values decoded before it: rules that relate fields
(the `.npy` has one row per caption, `.txt` is the first caption, the key spells the image id) belong to the later
field. The rules are plain functions (`check_meta`, `check_embedding_layout`, `check_first_caption`) so the loader,
which decodes the core fields its own faster way, applies the same ones. A rule raises `SchemaError(reason)`
without a location; the reader that called it prefixes the shard and key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .errors import SchemaError
from .names import EMBED_DIM, EMBED_DTYPE, MAX_IMAGE_ID, make_key
from .npy import decode_npy, encode_npy, npy_layout

_EMBED_DTYPE = np.dtype(EMBED_DTYPE)  # a dtype compared with a str parses the str each time (~1 µs)

Values = Mapping[str, Any]  # a sample's decoded values by field extension
# What the build made of an input record, by name: "image" (the preprocessed image: `jpeg` bytes, `width`,
# `height`, `orig_width`, `orig_height`) and "embeddings" (the record's caption embeddings, `[n_captions, D]`
# float16, row i ↔ captions[i]). A field that needs another product (a second encoder's embeddings) names its key.
Products = Mapping[str, Any]


@dataclass(frozen=True)
class Field:
    """One member of every sample: `<key>.<ext>`.

    The build end: `build(record, products)` gives the field's value from the input record (`image_id`,
    `file_name`, `captions`) and its `Products`; None for a derived field (like `txt`), whose `encode` reads
    other fields' values and is given none of its own. `encode(values)` gives the member's bytes.

    The loader end: `decode(data)` gives the value from the bytes (raises SchemaError(reason)); `check(value,
    values)` raises SchemaError(reason) when the value breaks a rule (`values`: the fields decoded before it).
    `batch`, when set, makes the loader carry the field: `select(value, caption)` gives what a record keeps for
    the chosen caption (its index; None when every caption is kept; unset: the value as is), and `batch` turns a
    batch's selected values into one array, `batch[ext]`. The loader handles the core fields (jpg, json, npy)
    its own faster way and does not read `txt`."""

    ext: str
    kind: str  # what it holds, for docs and messages
    encode: Callable[[Values], bytes]
    decode: Callable[[Any], Any]
    check: Callable[[Any, Values], None] | None = None
    batch: Callable[[list], np.ndarray] | None = None
    build: Callable[[Any, Products], Any] | None = None
    select: Callable[[Any, int | None], Any] | None = None


class Sample(NamedTuple):
    """One sample: its key and its fields' values by extension (`jpg` bytes, `json` dict, `npy` float16 array,
    `txt` str; the writer is given no `txt`, it is derived). What the writer writes and what checked readers
    return; `source` names the shard it was read from (empty before it is written)."""

    key: str
    values: dict[str, Any]
    source: str = ""

    @property
    def jpg(self):
        return self.values["jpg"]

    @property
    def meta(self) -> dict[str, Any]:
        """The `.json` object: image_id, file_name, captions, sizes."""
        return self.values["json"]

    @property
    def captions(self) -> list[str]:
        return self.values["json"]["captions"]

    @property
    def image_id(self) -> int:
        return self.values["json"]["image_id"]

    @property
    def embeddings(self) -> np.ndarray:
        """[n_captions, EMBED_DIM] float16, row i ↔ captions[i]."""
        return self.values["npy"]

    @property
    def n_bytes(self) -> int:
        """Roughly what the sample adds to a shard (for the shard size cap): its binary values plus 2 KB for
        the small members and the tar headers."""
        return 2048 + sum(v.nbytes if isinstance(v, np.ndarray) else len(v) for v in self.values.values()
                          if isinstance(v, (bytes, bytearray, memoryview, np.ndarray)))


class SampleMeta(NamedTuple):
    """What a sample's `.json` says: the image id, its captions, and the whole object (file_name, width, ...)."""

    image_id: int
    captions: list[str]
    fields: dict[str, Any]


# --- the rules, as functions every reader calls ----------------------------------------------------------------

_new_meta = tuple.__new__  # SampleMeta(...) goes through a Python-level __new__: ~0.3 µs a sample more
_json_scan = json.JSONDecoder().scan_once  # the C scanner without `json.loads`' wrappers (~1.5 µs a sample)


def decode_json(data) -> Any:
    """A `.json` member (bytes or a buffer of UTF-8) as the one JSON value it holds."""
    try:
        text = str(data, "utf-8")
        obj, end = _json_scan(text, 0)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"json does not parse ({exc})") from None
    except StopIteration:  # the scanner's "no value at 0"
        raise SchemaError("json does not parse (no JSON value)") from None
    except RecursionError:
        raise SchemaError("json nested too deep") from None
    if end != len(text) and text[end:].strip():
        raise SchemaError("json does not parse (more than one JSON value)")
    return obj


def check_meta(obj: Any, key: str | None = None) -> SampleMeta:
    """The rules for a decoded `.json` member: one object, an integer `image_id` in 0..MAX_IMAGE_ID that `key`
    (when given) spells, `captions` a non-empty list of valid Unicode strings."""
    if type(obj) is not dict:
        raise SchemaError(f"json is a {type(obj).__name__}, not an object")
    image_id, captions = obj.get("image_id"), obj.get("captions")
    if type(image_id) is not int:
        raise SchemaError(f"json image_id {image_id!r:.40} is not an integer")
    if not 0 <= image_id <= MAX_IMAGE_ID:
        raise SchemaError(f"json image_id {image_id!r:.40} is outside 0..{MAX_IMAGE_ID}")
    if type(captions) is not list:
        raise SchemaError("json captions is not a list of strings")
    if not captions:
        raise SchemaError("no captions (a sample needs at least one)")
    try:
        "".join(captions).encode("utf-8")  # one C call: every caption a str, and encodable
    except TypeError:
        raise SchemaError("json captions is not a list of strings") from None
    except UnicodeEncodeError:  # JSON escapes can spell lone surrogates, which no file or tokenizer takes
        raise SchemaError("captions are not valid Unicode text") from None
    if key is not None and key != make_key(image_id):
        raise SchemaError(f"key does not match image_id {image_id}")
    return _new_meta(SampleMeta, (image_id, captions, obj))


def check_embedding_layout(dtype: np.dtype, shape: tuple[int, ...], *, n_captions: int,
                           embed_dim: int | None = EMBED_DIM) -> None:
    """The `.npy` rule: float16 `[n_captions, embed_dim]` (row i ↔ captions[i]); `embed_dim` is the set's (its
    manifest's), None: any width (the sample alone does not say which)."""
    width = shape[1] if embed_dim is None and len(shape) == 2 and shape[1] >= 1 else embed_dim
    if dtype != _EMBED_DTYPE or shape != (n_captions, width):
        raise SchemaError(f"embeddings are {dtype} {shape}, expected {EMBED_DTYPE} ({n_captions}, "
                          f"{width if width is not None else 'D'}) for {n_captions} captions")


def check_first_caption(text: str, captions: list[str]) -> None:
    """The `.txt` rule: the first caption (what open_clip reads)."""
    if text != captions[0]:
        raise SchemaError("txt is not the first caption")


def embedding_layout(data) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, payload offset) of a `.npy` member, for a reader that slices rows itself."""
    try:
        return npy_layout(data)
    except ValueError as exc:  # npy's own parser raises only ValueError for a malformed member
        raise SchemaError(f"npy does not load without pickle ({exc})") from None


def decode_embeddings(data) -> np.ndarray:
    """A `.npy` member as its array (a read-only view; no pickle, header checked)."""
    try:
        return decode_npy(data)
    except ValueError as exc:  # npy's own parser raises only ValueError for a malformed member
        raise SchemaError(f"npy does not load without pickle ({exc})") from None


def member_problem(exts, expected: tuple[str, ...]) -> str | None:
    """What is wrong with a sample holding members `exts` when `expected` are due, or None. Members beyond the
    expected ones are no problem (a field this reader does not know: it is not read)."""
    missing = sorted(set(expected).difference(exts))
    if not missing:
        return None
    return f"members {sorted(exts)}, expected {list(expected)} (missing {', '.join(missing)})"


# --- the schema ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schema:
    """The fields of a sample, in decode order (each field's check sees the fields before it)."""

    fields: tuple[Field, ...]

    @property
    def exts(self) -> tuple[str, ...]:
        """The members' extensions in tar order (sorted): the manifest's `fields`."""
        return tuple(sorted(f.ext for f in self.fields))

    def with_field(self, field: Field) -> Schema:
        """This schema plus `field` (decoded last)."""
        if field.ext in self.exts or not field.ext.isalnum():
            raise ValueError(f"field extension {field.ext!r} is taken or not alphanumeric")
        return Schema((*self.fields, field))

    def build(self, record: Any, products: Products) -> Sample:
        """The sample of input `record` (its `image_id`, `file_name`, `captions`) and its `products`: each field's
        build end; derived fields are left to `encode`."""
        return Sample(make_key(record.image_id),
                      {f.ext: f.build(record, products) for f in self.fields if f.build is not None})

    def encode(self, values: Values) -> dict[str, bytes]:
        """The members of a sample with `values`, by extension in tar order."""
        members = {f.ext: f.encode(values) for f in self.fields}
        return {ext: members[ext] for ext in self.exts}

    def decode(self, key: str, members: Mapping[str, Any], *, source: str, embed_dim: int = EMBED_DIM) -> Sample:
        """A sample read from shard `source` of a set whose embeddings are `embed_dim` wide (its manifest's),
        every field decoded and checked. Raises SchemaError naming `source` and `key`."""
        try:
            problem = member_problem(members, self.exts)
            if problem is not None:
                raise SchemaError(problem)
            values: dict[str, Any] = {}
            for f in self.fields:
                value = f.decode(members[f.ext])
                if f.check is not None:
                    f.check(value, values)
                values[f.ext] = value
            if key != make_key(values["json"]["image_id"]):
                raise SchemaError(f"key does not match image_id {values['json']['image_id']}")
            emb = values["npy"]
            check_embedding_layout(emb.dtype, emb.shape, n_captions=len(values["json"]["captions"]),
                                   embed_dim=embed_dim)  # the set's width (the field's check takes any)
        except SchemaError as exc:
            raise SchemaError(f"{source}: {key}: {exc}") from None
        return Sample(key, values, source)


def _build_json(record: Any, products: Products) -> dict[str, Any]:
    img = products["image"]
    return {"image_id": record.image_id, "file_name": record.file_name, "captions": list(record.captions),
            "width": img.width, "height": img.height, "orig_width": img.orig_width, "orig_height": img.orig_height}


def _encode_json(values: Values) -> bytes:
    # sorted keys, no spaces, UTF-8 as is: the bytes of every shard written so far
    return json.dumps(values["json"], sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _check_json(obj: Any, values: Values) -> None:
    check_meta(obj)  # the key is checked once every field is decoded (`Schema.decode`)


def _check_npy(emb: np.ndarray, values: Values) -> None:
    # any width here: the set's (its manifest's `embed_dim`) is checked by `Schema.decode`, which is given it
    check_embedding_layout(emb.dtype, emb.shape, n_captions=len(values["json"]["captions"]), embed_dim=None)


SCHEMA = Schema((
    Field("json", "one JSON object: image_id, file_name, captions (all, cleaned), width, height, orig_width, "
                  "orig_height; UTF-8, sorted keys",
          encode=_encode_json, decode=decode_json, check=_check_json, build=_build_json),
    Field("npy", f"{EMBED_DTYPE} [n_captions, embed_dim] caption embeddings (the manifest's embed_dim, "
                 f"{EMBED_DIM} by default), row i ↔ captions[i]; no pickle",
          encode=lambda values: encode_npy(values["npy"]), decode=decode_embeddings, check=_check_npy,
          build=lambda record, products: products["embeddings"]),
    Field("txt", "the first caption, UTF-8 (what open_clip reads)",
          encode=lambda values: values["json"]["captions"][0].encode("utf-8"),
          decode=lambda data: str(data, "utf-8", "replace"),
          check=lambda text, values: check_first_caption(text, values["json"]["captions"])),
    Field("jpg", "the preprocessed image: an RGB baseline JPEG", encode=lambda values: bytes(values["jpg"]),
          decode=lambda data: data, build=lambda record, products: products["image"].jpeg),
))
FIELDS = SCHEMA.exts  # ("jpg", "json", "npy", "txt"): every sample's members, in tar order
