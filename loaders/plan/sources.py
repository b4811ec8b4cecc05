"""Turn what the user passes to `make_loader` into a list of shard URLs with their sample counts.

Accepted: a shard folder or remote prefix holding `manifest.json` (local, s3://, https://, any fsspec URL), a brace
pattern (`shards/train-{000000..000082}.tar`, expanded by webdataset, `::` lists too), or a list of shard URLs. Counts come from the manifest (or
open_clip's `sizes.json`) next to the shards: exact epochs need them, so we never guess. Counts are bounded before
anything is planned over them: a shard's by what its bytes can hold (a manifest's are checked as it is parsed; a
`sizes.json` has no sizes, so by the largest shard the format admits), an epoch's by `MAX_EPOCH_SAMPLES`.

Several sources (`resolve_sources`: a list of folders, brace patterns or `::` lists) are one shard list whose
shards remember their source; with `weights` (or `epoch_samples`) an epoch takes a quota of samples from each
(`loaders.plan.mixing`), without them each sample once (the sources concatenated, as a `::` list is). They are checked
to fit together before anything is read: one text encoder and embedding width (embeddings of two encoders live in
different spaces), one stored image size (the loader crops windows, it does not resize: a 336 px set cropped to
224 px would lose its borders); different crop modes are a warning.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from webdataset.shardlists import expand_urls

from shardgen.format import EMBED_DIM, MANIFEST_NAME, SIZES_NAME, Manifest, SchemaError, join, read_text
from shardgen.format.manifest import MAX_SHARD_BYTES, MIN_SAMPLE_BYTES

from ..errors import SourceError
from .mixing import quotas as mixing_quotas

log = logging.getLogger("loaders")
MAX_SHARD_SAMPLES = MAX_SHARD_BYTES // MIN_SAMPLE_BYTES
MAX_EPOCH_SAMPLES = 10**10  # more than LAION-5B: the plan holds a list entry per batch, so this bounds its memory


@dataclass(frozen=True)
class ShardSet:
    """Shard URLs and their sample counts; `manifest` is the (first) source's. Several sources: `names` (as
    given), `shard_source` (each shard's source index) and `parts` (each source's own set); `quotas`: samples per
    epoch from each source under weighted mixing (empty: each sample once per epoch)."""

    urls: list[str]
    counts: list[int]
    manifest: Manifest | None
    embed_dim: int = EMBED_DIM
    names: tuple[str, ...] = ()
    shard_source: tuple[int, ...] = ()
    quotas: tuple[int, ...] = ()
    parts: tuple[ShardSet, ...] = ()

    @property
    def n_samples(self) -> int:
        """Samples per epoch: the quotas' sum when mixing, else every sample once."""
        return sum(self.quotas) if self.quotas else sum(self.counts)

    def source_of(self, shard: int) -> int:
        """The index of the source shard `shard` belongs to (0 for a single source)."""
        return self.shard_source[shard] if self.shard_source else 0


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


def _check(manifest: Manifest, where: str, embed_dim: int | None) -> None:
    if embed_dim is not None and manifest.embed_dim != embed_dim:
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


def resolve_source(source, *, storage_options: dict | None = None, embed_dim: int | None = None) -> ShardSet:
    """Resolve `source` to shard URLs and counts (see module docstring); `embed_dim`, when given, is the width
    the manifests must state (None: theirs). Raises `SourceError`."""
    opts = storage_options or {}
    try:
        if isinstance(source, (str, os.PathLike)) and not str(source).endswith(".tar") and "{" not in str(source):
            folder = str(source)
            manifest = _load_manifest(folder, opts)
            if manifest is None:
                raise SourceError(_no_manifest_message(folder))
            _check(manifest, folder, embed_dim)
            return _bounded(ShardSet([join(folder, s.name) for s in manifest.shards],
                                     [s.n_samples for s in manifest.shards], manifest, manifest.embed_dim))
        # webdataset's own expansion: braces, `::`-joined lists, WDS_ environment variables
        urls = expand_urls(str(source)) if isinstance(source, (str, os.PathLike)) else [str(u) for u in source]
    except SchemaError as exc:
        raise SourceError(str(exc)) from exc
    if not urls:
        raise SourceError("no shards given")
    counts_by_folder: dict[str, dict[str, int]] = {}
    manifests: dict[str, Manifest] = {}  # by folder: a list over several folders is checked like several sources
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
                manifests[folder] = m
                check_compatible(manifests)
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
    width = manifest.embed_dim if manifest is not None else embed_dim or EMBED_DIM
    return _bounded(ShardSet(urls, counts, manifest, width))


def is_url_list(source) -> bool:
    """A list of shard URLs (`.tar`, no braces): one set, as it always was; any other list names sources."""
    return (not isinstance(source, (str, os.PathLike))
            and all(str(u).endswith(".tar") and "{" not in str(u) for u in source))


def resolve_sources(sources: list, *, weights: tuple[float, ...] | None = None, epoch_samples: int | None = None,
                    storage_options: dict | None = None, embed_dim: int | None = None) -> ShardSet:
    """Several sources (each what `resolve_source` takes) as one shard list, checked to fit together; with
    `weights` or `epoch_samples`, mixed (module docstring). Raises `SourceError`."""
    names = tuple(str(s) for s in sources)
    if not names:
        raise SourceError("no shards given")
    if weights is not None and len(weights) != len(names):
        raise SourceError(f"{len(weights)} weights for {len(names)} sources ({', '.join(names)}): give one each")
    parts = tuple(resolve_source(s, storage_options=storage_options, embed_dim=embed_dim) for s in sources)
    check_compatible({n: p.manifest for n, p in zip(names, parts) if p.manifest is not None})
    urls = [u for p in parts for u in p.urls]
    if len(set(urls)) < len(urls):
        twice = next(u for u in urls if urls.count(u) > 1)
        raise SourceError(f"{twice}: listed in more than one source; give each shard set once (a weight says how "
                          "much of it an epoch takes)")
    shard_source = tuple(i for i, p in enumerate(parts) for _ in p.urls)
    mix: tuple[int, ...] = ()
    if weights is not None or epoch_samples is not None:
        n = epoch_samples if epoch_samples is not None else sum(p.n_samples for p in parts)
        mix = mixing_quotas(list(weights) if weights is not None else [p.n_samples for p in parts], n)
        for name, part, quota in zip(names, parts, mix):
            if quota and not part.n_samples:
                raise SourceError(f"{name}: holds no samples, but its weight asks for {quota} per epoch")
    first = next((p.manifest for p in parts if p.manifest is not None), None)
    return _bounded(ShardSet(urls, [c for p in parts for c in p.counts], first, parts[0].embed_dim, names,
                             shard_source, mix, parts))


def encoder_name(manifest: Manifest) -> str:
    """What identifies the text encoder a set was built with: its fingerprint when the manifest records one,
    else its resolved path, else its name."""
    info = manifest.text_encoder
    return str(info.get("fingerprint") or info.get("path") or info.get("name") or "?")


def check_compatible(manifests: dict[str, Manifest]) -> None:
    """Sources (their manifests, by name) can be read together: one text encoder, one embedding width, one stored
    image size (else `SourceError` naming each source's); different crop modes are a warning naming them."""
    known = list(manifests.items())
    for what, value, fix in (
            ("text encoders", encoder_name, "their embeddings live in different spaces: build every set with one "
             "--text-encoder"),
            ("embedding widths", lambda m: f"{m.embed_dim}-d", "build every set with one --text-encoder"),
            ("image sizes", lambda m: f"{m.preprocess.get('image_size')} px", "the loader crops, it does not resize: "
             "build every set with one --image-size")):
        seen = {n: value(m) for n, m in known}
        if len(set(seen.values())) > 1:
            raise SourceError(f"sources with different {what} ({'; '.join(f'{n}: {v}' for n, v in seen.items())}): "
                              f"{fix}")
    crops = {n: str(m.preprocess.get("crop")) for n, m in known}
    if len(set(crops.values())) > 1:
        log.warning("sources with different crop modes (%s): their images were cut differently before the "
                    "loader's crop", "; ".join(f"{n}: {c}" for n, c in crops.items()))


def _bounded(shards: ShardSet) -> ShardSet:
    if shards.n_samples > MAX_EPOCH_SAMPLES:
        raise SourceError(f"{_dirname(shards.urls[0])}: {shards.n_samples} samples, more than an epoch may have "
                          f"({MAX_EPOCH_SAMPLES})")
    return shards
