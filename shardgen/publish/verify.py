"""`shardgen verify`: recount and checksum every shard against the manifest and check every sample.

The manifest's `embed_dim` is the width every sample's embedding rows must have. Per shard (read no further than
`SLACK_BYTES` past the manifest's `n_bytes`): size and sha256 equal the manifest, the tar parses to the end, the
count matches. Per sample: every field of the sample schema (`format.schema`, through `format.parse_sample`:
exactly the schema's members, a JSON object whose image id the key spells, at least one caption, float16
`[n_captions, embed_dim]` embeddings loaded without pickle, `txt` the first caption, and any field added since),
then the JPEG decodes to the recorded size and the embedding rows are finite and unit-norm. A shard's DALI
`.idx`, when there is one, lists exactly the tar's members where they lie (the loader seeks by it); one that does
not is the index's problem, named by the `.idx`. Every problem is listed (exit 1); a source that cannot be read at all (credentials, network) is a `UserError`.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..format import (
    EMBED_DIM,
    MANIFEST_NAME,
    Manifest,
    SchemaError,
    ShardInfo,
    access_error,
    iter_tar_samples,
    join,
    parse_sample,
    read_bytes,
    read_manifest,
    read_text,
    redact,
)
from ..format.dali_index import index_members, index_name, parse_dali_index, tiles
from ..format.names import MAX_STORED_IMAGE_PIXELS

MAX_PROBLEMS_PER_SHARD = 20
SLACK_BYTES = 64 << 20  # read this far past a shard's n_bytes, so what a longer shard holds is still listed


@dataclass
class VerifyReport:
    n_shards: int = 0
    n_samples: int = 0
    n_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_sample(key: str, fields: dict, *, image_size: int | None, source: str = "shard",
                 embed_dim: int = EMBED_DIM) -> list[str]:
    """Problems with one sample (empty list when it is sound): the schema's rules (`format.parse_sample`), then
    what only verify checks: the JPEG decodes to the recorded size, embedding rows are finite and unit-norm."""
    try:
        record = parse_sample(key, fields, source=source, embed_dim=embed_dim)
    except SchemaError as exc:
        return [str(exc).removeprefix(f"{source}: ")]
    problems = []
    meta = record.meta
    try:
        with Image.open(io.BytesIO(record.jpg)) as img:
            if img.width * img.height > MAX_STORED_IMAGE_PIXELS:  # before decoding: a header may claim anything
                return [f"{key}: image claims {img.width}x{img.height} pixels, more than a shard image can be"]
            img.load()
            if img.mode != "RGB" or img.format != "JPEG":
                problems.append(f"{key}: image is {img.format} {img.mode}, expected RGB JPEG")
            if (meta.get("width"), meta.get("height")) != img.size:
                problems.append(f"{key}: image is {img.size}, json says {(meta.get('width'), meta.get('height'))}")
            if image_size and min(img.size) != image_size:
                problems.append(f"{key}: shorter side {min(img.size)} != {image_size}")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        problems.append(f"{key}: image does not decode ({exc})")
    rows = record.embeddings.astype(np.float32)
    if not np.isfinite(rows).all():
        problems.append(f"{key}: embeddings contain NaN/inf")
    elif not np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-2):
        problems.append(f"{key}: embedding rows are not unit-norm")
    return problems


def _read_manifest(source: str) -> Manifest | str:
    """The manifest at `source`, or the problem that stands for it (missing, not a manifest). Raises UserError
    when it cannot be read at all (credentials, network)."""
    try:
        return read_manifest(source)
    except FileNotFoundError:
        return f"{redact(join(source, MANIFEST_NAME))}: missing (not a shardgen output folder, or build unfinished)"
    except SchemaError as exc:
        return str(exc)
    except OSError as exc:
        raise access_error(join(source, MANIFEST_NAME), exc) from None


def verify(source: str, *, progress: bool = False) -> VerifyReport:
    """Check the shard set at `source` (a folder or URL holding manifest.json). Problems with the data are listed
    in the report; a source that cannot be reached (credentials, network) raises UserError."""
    from tqdm.auto import tqdm

    manifest = _read_manifest(source)
    if isinstance(manifest, str):
        return VerifyReport(problems=[manifest])
    report = VerifyReport()
    if manifest.text_encoder.get("embed_dim", manifest.embed_dim) != manifest.embed_dim:
        report.problems.append(f"{MANIFEST_NAME}: embed_dim {manifest.embed_dim}, but its text_encoder says "
                               f"{manifest.text_encoder['embed_dim']}")
    image_size = manifest.preprocess.get("image_size") if manifest.preprocess.get("crop") == "center" else None
    last_key = ""
    for shard in tqdm(manifest.shards, desc="verify", unit="shard", disable=not progress):
        report.n_shards += 1
        try:  # a bounded read: a file far longer than its manifest says (or without end) is not read to its end
            data = read_bytes(join(source, shard.name), max_bytes=shard.n_bytes + SLACK_BYTES)
        except PermissionError as exc:  # the credentials, not the data: stop here
            raise access_error(join(source, shard.name), exc) from None
        except OSError as exc:
            report.problems.append(f"{shard.name}: cannot read ({redact(exc)})")
            continue
        except SchemaError:
            report.problems.append(f"{shard.name}: more than {SLACK_BYTES} bytes past the {shard.n_bytes} the "
                                   "manifest says; not read further")
            continue
        report.n_bytes += len(data)
        shard_problems = _check_bytes(data, shard)
        count, last_key = _check_samples(data, shard, image_size, last_key, shard_problems,
                                         embed_dim=manifest.embed_dim)
        if count != shard.n_samples:
            shard_problems.append(f"{count} samples, manifest says {shard.n_samples}")
        report.n_samples += count
        report.problems.extend(f"{shard.name}: {p}" for p in shard_problems[:MAX_PROBLEMS_PER_SHARD])
        if len(shard_problems) > MAX_PROBLEMS_PER_SHARD:
            report.problems.append(f"{shard.name}: ... and {len(shard_problems) - MAX_PROBLEMS_PER_SHARD} more")
        report.problems.extend(_check_index(source, shard, data, shard_sound=not shard_problems))
    return report


def _check_index(source: str, shard: ShardInfo, data: bytes, *, shard_sound: bool) -> list[str]:
    """Problems of the shard's DALI index (none when it has none): it must list exactly the tar's members, where
    they are, as the loader seeks by it. A lying index is the index's fault, named as such."""
    name = index_name(shard.name)
    try:
        text = read_text(join(source, name))
    except FileNotFoundError:
        return []
    except PermissionError as exc:
        raise access_error(join(source, name), exc) from None
    except OSError as exc:
        return [f"{name}: cannot read ({redact(exc)})"]
    except (SchemaError, UnicodeDecodeError) as exc:  # longer than any index, or not text
        return [f"{name}: not a DALI index ({exc})".splitlines()[0]]
    try:
        listed = parse_dali_index(text)
    except SchemaError as exc:
        return [f"{name}: {exc}"]
    if tiles(listed, data):
        return []
    try:
        actual = index_members(io.BytesIO(data))
    except tarfile.TarError:
        return []  # the shard's own problem, listed with it
    if listed == actual:
        return []
    fix = "rebuild it (rerun shardgen build on the folder) or delete it"
    fault = f"the index does not fit {shard.name}" + (" (which checks out)" if shard_sound else "")
    if len(listed) != len(actual):
        return [f"{name}: lists {len(listed)} samples, {shard.name} holds {len(actual)}: {fault}; {fix}"]
    i = next(i for i, (a, b) in enumerate(zip(listed, actual)) if a != b)
    return [f"{name}: sample {i} is {_members(listed[i])} by the index, {_members(actual[i])} in the tar: "
            f"{fault}; {fix}"]


def _members(members: list) -> str:
    return " ".join(f"{n}@{offset}+{size}" for _, offset, size, n in members)[:200]


def _check_bytes(data: bytes, shard: ShardInfo) -> list[str]:
    problems = []
    if len(data) != shard.n_bytes:
        problems.append(f"{len(data)} bytes, manifest says {shard.n_bytes}")
    if hashlib.sha256(data).hexdigest() != shard.sha256:
        problems.append("sha256 differs from the manifest (edited or truncated)")
    return problems


def _check_samples(data: bytes, shard: ShardInfo, image_size: int | None, last_key: str,
                   problems: list[str], *, embed_dim: int = EMBED_DIM) -> tuple[int, str]:
    """Check every sample of one shard, appending to `problems`; returns (samples read, the last key)."""
    count = 0
    try:
        for key, fields in iter_tar_samples(io.BytesIO(data), source=shard.name):
            count += 1
            if key <= last_key:
                problems.append(f"{key}: key out of order or duplicated (after {last_key})")
            last_key = key
            problems.extend(check_sample(key, fields, image_size=image_size, source=shard.name,
                                         embed_dim=embed_dim))
    except SchemaError as exc:
        problems.append(str(exc).removeprefix(f"{shard.name}: "))
    return count, last_key
