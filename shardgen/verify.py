"""`shardgen verify`: recount and checksum every shard against the manifest and check every sample.

Per shard: size and sha256 equal the manifest, the tar parses to the end, the count matches. Per sample: exactly
the schema's fields, key equals the image id, the JPEG decodes to the recorded size, the `.npy` loads without
pickle as float16 `[n_captions, 512]` with finite, unit-norm rows, and `txt` is the first caption.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .format import (
    EMBED_DIM,
    FIELDS,
    MANIFEST_NAME,
    Manifest,
    SchemaError,
    decode_npy,
    iter_tar_samples,
    join,
    make_key,
    read_bytes,
    read_text,
)

MAX_PROBLEMS_PER_SHARD = 20


@dataclass
class VerifyReport:
    n_shards: int = 0
    n_samples: int = 0
    n_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_sample(key: str, fields: dict[str, bytes], *, image_size: int | None) -> list[str]:
    """Problems with one sample (empty list when it is sound)."""
    problems = []
    if tuple(sorted(fields)) != FIELDS:
        return [f"{key}: fields {sorted(fields)} != {list(FIELDS)}"]
    try:
        meta = json.loads(fields["json"])
        captions = meta["captions"]
        if key != make_key(int(meta["image_id"])):
            problems.append(f"{key}: key does not match image_id {meta['image_id']}")
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{key}: bad json ({exc})"]
    try:
        with Image.open(io.BytesIO(fields["jpg"])) as img:
            img.load()
            if img.mode != "RGB" or img.format != "JPEG":
                problems.append(f"{key}: image is {img.format} {img.mode}, expected RGB JPEG")
            if (meta.get("width"), meta.get("height")) != img.size:
                problems.append(f"{key}: image is {img.size}, json says {(meta.get('width'), meta.get('height'))}")
            if image_size and min(img.size) != image_size:
                problems.append(f"{key}: shorter side {min(img.size)} != {image_size}")
    except (OSError, SyntaxError, ValueError) as exc:
        problems.append(f"{key}: image does not decode ({exc})")
    try:
        emb = decode_npy(fields["npy"])
        if emb.dtype != np.float16 or emb.shape != (len(captions), EMBED_DIM):
            problems.append(f"{key}: embeddings {emb.dtype} {emb.shape}, expected float16 ({len(captions)}, {EMBED_DIM})")
        elif not np.isfinite(emb).all():
            problems.append(f"{key}: embeddings contain NaN/inf")
        elif not np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=1e-2):
            problems.append(f"{key}: embedding rows are not unit-norm")
    except ValueError as exc:
        problems.append(f"{key}: npy does not load without pickle ({exc})")
    if fields["txt"].decode("utf-8", "replace") != (captions[0] if captions else None):
        problems.append(f"{key}: txt is not the first caption")
    return problems


def verify(source: str, *, progress: bool = False) -> VerifyReport:
    """Check the shard set at `source` (a folder or URL holding manifest.json)."""
    from tqdm.auto import tqdm

    manifest_url = join(source, MANIFEST_NAME)
    try:
        manifest = Manifest.from_json(read_text(manifest_url), source=manifest_url)
    except FileNotFoundError:
        return VerifyReport(problems=[f"{manifest_url}: missing (not a shardgen output folder, or build unfinished)"])
    except SchemaError as exc:
        return VerifyReport(problems=[str(exc)])
    report = VerifyReport()
    image_size = manifest.preprocess.get("image_size") if manifest.preprocess.get("crop") == "center" else None
    last_key = ""
    for shard in tqdm(manifest.shards, desc="verify", unit="shard", disable=not progress):
        url = join(source, shard.name)
        report.n_shards += 1
        try:
            data = read_bytes(url)
        except (FileNotFoundError, OSError) as exc:
            report.problems.append(f"{shard.name}: cannot read ({exc})")
            continue
        report.n_bytes += len(data)
        if len(data) != shard.n_bytes:
            report.problems.append(f"{shard.name}: {len(data)} bytes, manifest says {shard.n_bytes}")
        if hashlib.sha256(data).hexdigest() != shard.sha256:
            report.problems.append(f"{shard.name}: sha256 differs from the manifest (edited or truncated)")
        count, shard_problems = 0, []
        try:
            for key, fields in iter_tar_samples(io.BytesIO(data), source=shard.name):
                count += 1
                if key <= last_key:
                    shard_problems.append(f"{key}: key out of order or duplicated (after {last_key})")
                last_key = key
                shard_problems.extend(check_sample(key, fields, image_size=image_size))
        except SchemaError as exc:
            shard_problems.append(str(exc))
        if count != shard.n_samples:
            shard_problems.append(f"{count} samples, manifest says {shard.n_samples}")
        report.n_samples += count
        report.problems.extend(f"{shard.name}: {p}" for p in shard_problems[:MAX_PROBLEMS_PER_SHARD])
        if len(shard_problems) > MAX_PROBLEMS_PER_SHARD:
            report.problems.append(f"{shard.name}: ... and {len(shard_problems) - MAX_PROBLEMS_PER_SHARD} more")
    return report
