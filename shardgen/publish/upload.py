"""`shardgen upload`: copy a shard folder to any fsspec URL (s3://, gs://, az://, file://, ...), resumably.

Everything is checked before anything remote changes: every file to send is a regular file inside the source
folder (links leading out of it refused: shards, DALI indexes, `sizes.json`, `shardindex.json`, the manifest),
every shard's sha256 equals the manifest's, and the destination holds no other dataset (`check_destination`:
a manifest of another split, source, encoder or preprocessing is refused with one line naming what is there,
unless `overwrite`). Only then are the destination's old `manifest.json`,
`sizes.json` and `shardindex.json` removed, so a refused upload leaves a good remote copy readable, and a reader
never sees an index over a mix of old and new shards. Shards go next, in parallel; each one already at the
destination with the same size and checksum is skipped, so an interrupted upload resumes. What lands is verified
(the store's MD5 where it exposes one — S3 ETag of a single-part upload, GCS md5Hash — else a re-read checked
against the manifest's sha256). The indexes go last, the manifest very last, so a reader never sees an index
pointing at missing shards. The S3 endpoint follows `AWS_ENDPOINT_URL` (MinIO, R2, moto) or `--endpoint-url`.

`build_and_upload` is `shardgen build --out s3://...`: the shard tasks write their shards to the store themselves
(another split's prefix is refused before anything changes); the manifest goes last.
"""

from __future__ import annotations

import base64
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import fsspec

from ..errors import UserError
from ..format import (
    MANIFEST_NAME,
    SIZES_NAME,
    WIDS_INDEX_NAME,
    Manifest,
    RefusedFile,
    SchemaError,
    ShardInfo,
    client_errors,
    open_local,
    protocols,
    read_local,
    redact,
    with_timeouts,
)
from ..format.storage import METADATA_MAX_BYTES

if TYPE_CHECKING:  # the build (torch, the text tower) is imported only when `build_and_upload` runs
    from ..config import BuildConfig
    from ..sharding.pipeline import BuildReport


@dataclass
class UploadReport:
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_bytes: int = 0


class LocalFile(NamedTuple):
    """A file to send, checked (`local_files`): its shard entry (None for the indexes), path, size, digests."""

    shard: ShardInfo | None
    path: Path
    size: int
    md5: str  # compares with store ETags only
    sha256: str


def _checked(src: Path, name: str, shard: ShardInfo | None) -> LocalFile:
    """`src/name`: a regular file inside `src` once links are resolved, and for a shard the sha256 its manifest
    says. Raises UserError."""
    from ..format.digest import file_digests

    path = src / name
    try:
        open_local(path, root=src).close()
    except RefusedFile as exc:
        raise UserError(f"{exc}; refusing to upload (nothing was sent or removed)") from None
    except FileNotFoundError:
        raise UserError(f"{path}: missing; run `shardgen verify {src}` (nothing was sent or removed)") from None
    md5, sha256 = file_digests(path, "md5", "sha256")
    if shard is not None and sha256 != shard.sha256:
        raise UserError(f"{path}: sha256 differs from the manifest; run `shardgen verify {src}` (nothing was sent "
                        "or removed)")
    return LocalFile(shard, path, path.stat().st_size, md5, sha256)


def local_files(src: Path, manifest: Manifest, *, workers: int = 8) -> tuple[list[LocalFile], list[LocalFile]]:
    """(shards and their DALI indexes, the index files) to send, each checked by `_checked` — before anything
    remote changes. The manifest's names are plain base names; a link out of the folder is refused too."""
    names: list[tuple[str, ShardInfo | None]] = [(s.name, s) for s in manifest.shards]
    names += [(s.name.replace(".tar", ".idx"), None) for s in manifest.shards
              if (src / s.name.replace(".tar", ".idx")).exists()]
    with ThreadPoolExecutor(max(1, workers)) as pool:  # sha256 of every shard: the upload's first read
        shards = list(pool.map(lambda item: _checked(src, *item), names))
    return shards, [_checked(src, name, None) for name in (SIZES_NAME, WIDS_INDEX_NAME, MANIFEST_NAME)]


def _remote_matches(fs, remote: str, local: LocalFile) -> bool:
    """True when `remote` exists with this size and content (store checksum if any, else a re-read)."""
    try:
        info = fs.info(remote)
    except FileNotFoundError:
        return False
    if int(info.get("size", info.get("Size", -1))) != local.size:
        return False
    etag = str(info.get("ETag", info.get("etag", ""))).strip('"')
    if len(etag) == 32 and "-" not in etag:
        return etag == local.md5
    if info.get("md5Hash"):
        return base64.b64decode(info["md5Hash"]).hex() == local.md5
    h = hashlib.sha256()
    with fs.open(remote, "rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.hexdigest() == local.sha256


_HINTS = {
    PermissionError: "access denied: check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                     "gcloud auth) and that they may write there",
    FileNotFoundError: "the bucket (or container) does not exist: create it first",
}


def _error(dest: str, exc: Exception) -> UserError:
    hint = next((h for t, h in _HINTS.items() if isinstance(exc, t)), None)
    detail = redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
    return UserError(f"upload to {redact(dest)} failed: {detail}" + (f" ({hint})" if hint else ""))


def dataset_identity(manifest: Manifest) -> dict:
    """What makes two manifests the same dataset (a rebuild of it may replace it): split, source, encoder (but
    where its folder lay), preprocessing, embedding size."""
    encoder = {k: v for k, v in manifest.text_encoder.items() if k != "path"}
    return {"split": manifest.split, "source": manifest.source, "text_encoder": encoder,
            "preprocess": manifest.preprocess, "embed_dim": manifest.embed_dim}


def describe_dataset(manifest: Manifest) -> str:
    """'a train set of 48 samples in 5 shards (coco2017, encoder X, 224 px)' (for messages)."""
    origin = (manifest.source or {}).get("dataset") or (manifest.source or {}).get("karpathy") or "coco2014"
    return (f"a {manifest.split} set of {manifest.n_samples} samples in {len(manifest.shards)} shards ({origin}, "
            f"encoder {manifest.text_encoder.get('name', '?')}, {manifest.preprocess.get('image_size', '?')} px, "
            f"crop {manifest.preprocess.get('crop', '?')})")


def check_destination(fs, root: str, expected: dict, *, dest: str, what: str, overwrite: bool = False) -> None:
    """Refuse (UserError, one line naming what is there) a destination whose manifest is of another dataset (its
    `dataset_identity` differs from `expected` in a key `expected` has; `what` describes ours), unless
    `overwrite`. A destination without a readable manifest (empty, an upload interrupted after it removed the old
    one, a manifest no reader can parse) holds no dataset to protect and is taken as it is."""
    remote = f"{root}/{MANIFEST_NAME}"
    try:
        with fs.open(remote, "rb") as fh:
            data = fh.read(METADATA_MAX_BYTES + 1)
    except FileNotFoundError:
        return
    if overwrite:
        return
    try:
        there = Manifest.from_json(data, source=f"{redact(dest)}/{MANIFEST_NAME}")
    except SchemaError:  # no reader can use what is there, so replacing it breaks nothing that works
        return
    identity = dataset_identity(there)
    if {key: identity[key] for key in expected} != expected:
        raise UserError(f"{redact(dest)} holds another dataset, {describe_dataset(there)}; this is {what}: choose "
                        "another prefix, or pass --overwrite to replace it")


def remove_indexes(fs, root: str) -> None:
    """Take the old indexes at `root` (on filesystem `fs`) away before any shard there changes: the manifest
    first, as readers look for it first. Whoever sends shards to a prefix calls this before the first one, after
    every check that could refuse the upload."""
    for name in (MANIFEST_NAME, SIZES_NAME, WIDS_INDEX_NAME):
        try:
            fs.rm_file(f"{root}/{name}")
        except FileNotFoundError:
            pass


def _read_local_manifest(src: Path) -> Manifest:
    path = src / MANIFEST_NAME
    try:
        return Manifest.from_json(read_local(path, root=src, max_bytes=METADATA_MAX_BYTES), source=str(path))
    except FileNotFoundError:
        raise UserError(f"{src}: no {MANIFEST_NAME}; upload a folder written by `shardgen build`") from None
    except RefusedFile as exc:
        raise UserError(f"{exc}; refusing to upload it") from None


def upload(src: str | Path, dest: str, *, workers: int = 8, storage_options: dict | None = None,
           progress: bool = True, overwrite: bool = False) -> UploadReport:
    """Upload the shard set in `src` to `dest` (a folder URL). Raises UserError on a refused upload (checked
    before anything remote changes: see the module's docstring) and on access/network failures."""
    from tqdm.auto import tqdm

    src = Path(src)
    manifest = _read_local_manifest(src)
    shards, indexes = local_files(src, manifest, workers=workers)
    try:
        fs, root = fsspec.core.url_to_fs(dest, **with_timeouts(dest, storage_options))
    except (ImportError, ValueError) as exc:
        raise UserError(f"{redact(dest)}: {exc} (for s3:// install s3fs, for gs:// gcsfs)") from None
    root = root.rstrip("/")
    report = UploadReport()

    def one(local: LocalFile) -> None:
        remote = f"{root}/{local.path.name}"
        if _remote_matches(fs, remote, local):
            report.skipped.append(local.path.name)
            return
        fs.put_file(str(local.path), remote)
        if not _remote_matches(fs, remote, local):
            raise UserError(f"{redact(dest)}/{local.path.name}: what landed differs from the local file (size or "
                            "checksum)")
        report.uploaded.append(local.path.name)
        report.n_bytes += local.size

    try:
        check_destination(fs, root, dataset_identity(manifest), dest=dest, what=describe_dataset(manifest),
                          overwrite=overwrite)
        if {"file", "local"} & set(protocols(fs)):
            fs.makedirs(root, exist_ok=True)  # object stores have no folders (and makedirs would create buckets)
        remove_indexes(fs, root)
        with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(shards), unit="file", desc="upload",
                                                               disable=not progress) as bar:
            for _ in pool.map(one, shards):
                bar.update(1)
        for local in indexes:  # indexes last; the manifest very last
            fs.put_file(str(local.path), f"{root}/{local.path.name}")
            report.uploaded.append(local.path.name)
    except client_errors() as exc:  # credentials, network, a missing bucket: the user's to fix; others are bugs
        raise _error(dest, exc) from exc
    return report


def build_and_upload(cfg: BuildConfig) -> BuildReport:
    """Build `cfg` straight into its output URL (`cfg.out`, e.g. s3://bucket/prefix): the old indexes there go
    first (after a check that the prefix holds no other split), the shard tasks write their shards to the store
    themselves, and the build writes the indexes and the manifest there last. The driver's disk holds only its work
    folder (`cfg.staging`: lock, journal, caption cache). Raises UserError on access or network failures."""
    from ..sharding.pipeline import build_shards

    dest = str(cfg.out)
    try:
        fs, root = fsspec.core.url_to_fs(dest, **with_timeouts(dest))
    except (ImportError, ValueError) as exc:  # an unknown protocol or its missing package: nothing has run yet
        raise UserError(f"{redact(dest)}: {exc} (for s3:// install s3fs, for gs:// gcsfs)") from None
    root = root.rstrip("/")
    try:  # the build's settings are known once it is done; another split's manifest is refused before any change
        check_destination(fs, root, {"split": cfg.dataset_split}, dest=dest, what=f"a {cfg.dataset_split} build")
        remove_indexes(fs, root)  # readers never see an old manifest over the new build's shards
        return build_shards(cfg)
    except client_errors() as exc:
        raise _error(dest, exc) from exc
