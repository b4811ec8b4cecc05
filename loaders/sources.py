"""Turn what the user passes to `make_loader` into a list of shard URLs with their sample counts.

Accepted: a shard folder or remote prefix holding `manifest.json` (local, s3://, https://, any fsspec URL), a brace
pattern (`shards/train-{000000..000082}.tar`, expanded by webdataset, `::` lists too), or a list of shard URLs. Counts come from the manifest (or
open_clip's `sizes.json`) next to the shards: exact epochs need them, so we never guess. Counts are bounded before
anything is planned over them: a shard's by what its bytes can hold (a manifest's are checked as it is parsed; a
`sizes.json` has no sizes, so by the largest shard the format admits), an epoch's by `MAX_EPOCH_SAMPLES`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from webdataset.shardlists import expand_urls

from shardgen.format import EMBED_DIM, MANIFEST_NAME, SIZES_NAME, Manifest, SchemaError, join, read_text
from shardgen.format.manifest import MAX_SHARD_BYTES, MIN_SAMPLE_BYTES

from .errors import SourceError

MAX_SHARD_SAMPLES = MAX_SHARD_BYTES // MIN_SAMPLE_BYTES
MAX_EPOCH_SAMPLES = 10**10  # more than LAION-5B: the plan holds a list entry per batch, so this bounds its memory


@dataclass(frozen=True)
class ShardSet:
    urls: list[str]
    counts: list[int]
    manifest: Manifest | None

    @property
    def n_samples(self) -> int:
        return sum(self.counts)


def _dirname(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def _basename(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _load_manifest(folder: str, storage_options: dict) -> Manifest | None:
    url = join(folder, MANIFEST_NAME)
    try:
        text = read_text(url, **storage_options)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise SourceError(f"{url}: access denied ({exc}); check the storage credentials") from exc
    except OSError as exc:
        raise SourceError(f"{url}: cannot read ({exc})") from exc
    return Manifest.from_json(text, source=url)


def _check(manifest: Manifest, where: str, embed_dim: int) -> None:
    if manifest.embed_dim != embed_dim:
        raise SourceError(f"{where}: embeddings are {manifest.embed_dim}-d, the loader expects {embed_dim}-d")


def _no_manifest_message(folder: str) -> str:
    """Why a folder gives no shards: it does not exist, it is the parent of the split folders, or it is no build."""
    local = "://" not in folder
    if local and not os.path.isdir(folder):
        return f"{folder}: no such folder; give a shard folder written by `shardgen build` (e.g. shards/train)"
    subs = sorted(d.name for d in os.scandir(folder) if os.path.isfile(join(d.path, MANIFEST_NAME))) if local else []
    if subs:
        return (f"{folder} holds the shard folders {', '.join(subs)}, not shards: give one of them "
                f"(e.g. {join(folder, subs[0])})")
    return (f"{join(folder, MANIFEST_NAME)}: not found; build shards with `shardgen build` or pass shard URLs whose "
            "folder has a manifest.json or sizes.json")


def resolve_source(source, *, storage_options: dict | None = None, embed_dim: int = EMBED_DIM) -> ShardSet:
    """Resolve `source` to shard URLs and counts (see module docstring). Raises `SourceError`."""
    opts = storage_options or {}
    try:
        if isinstance(source, (str, os.PathLike)) and not str(source).endswith(".tar") and "{" not in str(source):
            folder = str(source)
            manifest = _load_manifest(folder, opts)
            if manifest is None:
                raise SourceError(_no_manifest_message(folder))
            _check(manifest, folder, embed_dim)
            return _bounded(ShardSet([join(folder, s.name) for s in manifest.shards],
                                     [s.n_samples for s in manifest.shards], manifest))
        # webdataset's own expansion: braces, `::`-joined lists, WDS_ environment variables
        urls = expand_urls(str(source)) if isinstance(source, (str, os.PathLike)) else [str(u) for u in source]
    except SchemaError as exc:
        raise SourceError(str(exc)) from exc
    if not urls:
        raise SourceError("no shards given")
    counts_by_folder: dict[str, dict[str, int]] = {}
    manifest = None
    counts = []
    for url in urls:
        folder = _dirname(url)
        if folder not in counts_by_folder:
            try:
                m = _load_manifest(folder, opts)
            except SchemaError as exc:
                raise SourceError(str(exc)) from exc
            if m is not None:
                _check(m, folder, embed_dim)
                manifest = manifest or m
                counts_by_folder[folder] = {s.name: s.n_samples for s in m.shards}
            else:
                try:
                    counts_by_folder[folder] = json.loads(read_text(join(folder, SIZES_NAME), **opts))
                except (SchemaError, ValueError) as exc:  # too large, not JSON (ValueError: digits past the limit)
                    raise SourceError(f"{join(folder, SIZES_NAME)}: not a sizes file ({exc})") from None
                except FileNotFoundError:
                    raise SourceError(f"{url}: no manifest.json or sizes.json in {folder}; the loader needs "
                                      "sample counts for exact epochs") from None
        try:
            count = counts_by_folder[folder][_basename(url)]
        except (KeyError, TypeError):
            raise SourceError(f"{url}: not listed in the manifest of {folder}") from None
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_SHARD_SAMPLES:
            raise SourceError(f"{url}: {SIZES_NAME} of {folder} gives {count!r:.40} samples, not a count in "
                              f"0..{MAX_SHARD_SAMPLES}")
        counts.append(count)
    return _bounded(ShardSet(urls, counts, manifest))


def _bounded(shards: ShardSet) -> ShardSet:
    if shards.n_samples > MAX_EPOCH_SAMPLES:
        raise SourceError(f"{_dirname(shards.urls[0])}: {shards.n_samples} samples, more than an epoch may have "
                          f"({MAX_EPOCH_SAMPLES})")
    return shards
