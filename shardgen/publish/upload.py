"""`shardgen upload`: copy a shard folder to any fsspec URL (s3://, gs://, az://, file://, ...), resumably.

The destination's old `manifest.json`, `sizes.json` and `shardindex.json` are removed first, so a reader never
sees an index over a mix of old and new shards. Shards go next, in parallel; each one already at the destination
with the same size and checksum is skipped, so an interrupted upload resumes. What lands is verified (the
store's MD5 where it exposes one — S3 ETag of a single-part upload, GCS md5Hash — else a re-read checked against
the manifest's sha256). The indexes go last, the manifest very last, so a reader never sees an index pointing at
missing shards. Only files inside the source folder are sent, whatever the manifest names.
The S3 endpoint follows `AWS_ENDPOINT_URL` (MinIO, R2, moto) or `--endpoint-url`.

`build_and_upload` is `shardgen build --out s3://...`: a build staged in a local folder, each shard sent as it
closes, then the same upload pass.
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
    ShardInfo,
    client_errors,
    protocols,
    redact,
    with_timeouts,
)

if TYPE_CHECKING:  # the build (torch, the text tower) is imported only when `build_and_upload` runs
    from ..build.pipeline import BuildReport
    from ..config import BuildConfig


@dataclass
class UploadReport:
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_bytes: int = 0


def _digests(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a local file in one read; md5 compares with store ETags only."""
    from ..format.digest import file_digests

    md5, sha256 = file_digests(path, "md5", "sha256")
    return md5, sha256


def _remote_matches(fs, remote: str, *, size: int, md5: str, sha256: str) -> bool:
    """True when `remote` exists with this size and content (store checksum if any, else a re-read)."""
    try:
        info = fs.info(remote)
    except FileNotFoundError:
        return False
    if int(info.get("size", info.get("Size", -1))) != size:
        return False
    etag = str(info.get("ETag", info.get("etag", ""))).strip('"')
    if len(etag) == 32 and "-" not in etag:
        return etag == md5
    if info.get("md5Hash"):
        return base64.b64decode(info["md5Hash"]).hex() == md5
    h = hashlib.sha256()
    with fs.open(remote, "rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.hexdigest() == sha256


_HINTS = {
    PermissionError: "access denied: check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                     "gcloud auth) and that they may write there",
    FileNotFoundError: "the bucket (or container) does not exist: create it first",
}


def _error(dest: str, exc: Exception) -> UserError:
    hint = next((h for t, h in _HINTS.items() if isinstance(exc, t)), None)
    detail = redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
    return UserError(f"upload to {redact(dest)} failed: {detail}" + (f" ({hint})" if hint else ""))


def _local_files(src: Path, manifest: Manifest) -> list[tuple[ShardInfo | None, Path]]:
    """The shards the manifest lists (and their DALI indexes, where present), each checked to be a file inside
    `src` (the manifest's names are plain base names; a link out of the folder is refused too)."""
    files: list[tuple[ShardInfo | None, Path]] = [(s, src / s.name) for s in manifest.shards]
    files += [(None, src / s.name.replace(".tar", ".idx")) for s in manifest.shards
              if (src / s.name.replace(".tar", ".idx")).is_file()]
    root = src.resolve()
    for _, path in files:
        if not path.resolve().is_relative_to(root):
            raise UserError(f"{path}: leads outside {src}; refusing to upload it")
    return files


def remove_indexes(fs, root: str) -> None:
    """Take the old indexes at `root` (on filesystem `fs`) away before any shard there changes: the manifest
    first, as readers look for it first. Whoever sends shards to a prefix calls this before the first one."""
    for name in (MANIFEST_NAME, SIZES_NAME, WIDS_INDEX_NAME):
        try:
            fs.rm_file(f"{root}/{name}")
        except FileNotFoundError:
            pass


def upload(src: str | Path, dest: str, *, workers: int = 8, storage_options: dict | None = None,
           progress: bool = True) -> UploadReport:
    """Upload the shard set in `src` to `dest` (a folder URL). Raises UserError on access/network failures."""
    from tqdm.auto import tqdm

    src = Path(src)
    try:
        manifest = Manifest.from_json((src / MANIFEST_NAME).read_bytes(), source=str(src / MANIFEST_NAME))
    except FileNotFoundError:
        raise UserError(f"{src}: no {MANIFEST_NAME}; upload a folder written by `shardgen build`") from None
    files = _local_files(src, manifest)
    try:
        fs, root = fsspec.core.url_to_fs(dest, **with_timeouts(dest, storage_options))
    except (ImportError, ValueError) as exc:
        raise UserError(f"{redact(dest)}: {exc} (for s3:// install s3fs, for gs:// gcsfs)") from None
    root = root.rstrip("/")
    report = UploadReport()

    def one(item: tuple[ShardInfo | None, Path]) -> None:
        shard, path = item
        remote = f"{root}/{path.name}"
        md5, sha = _digests(path)
        if shard is not None and sha != shard.sha256:
            raise UserError(f"{path}: sha256 differs from the manifest; run `shardgen verify {src}`")
        size = path.stat().st_size
        if _remote_matches(fs, remote, size=size, md5=md5, sha256=sha):
            report.skipped.append(path.name)
            return
        fs.put_file(str(path), remote)
        if not _remote_matches(fs, remote, size=size, md5=md5, sha256=sha):
            raise UserError(f"{redact(dest)}/{path.name}: what landed differs from the local file (size or checksum)")
        report.uploaded.append(path.name)
        report.n_bytes += size

    try:
        if {"file", "local"} & set(protocols(fs)):
            fs.makedirs(root, exist_ok=True)  # object stores have no folders (and makedirs would create buckets)
        remove_indexes(fs, root)
        with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(files), unit="file", desc="upload",
                                                               disable=not progress) as bar:
            for _ in pool.map(one, files):
                bar.update(1)
        for name in (SIZES_NAME, WIDS_INDEX_NAME, MANIFEST_NAME):  # indexes last; the manifest very last
            fs.put_file(str(src / name), f"{root}/{name}")
            report.uploaded.append(name)
    except client_errors() as exc:  # credentials, network, a missing bucket: the user's to fix; others are bugs
        raise _error(dest, exc) from exc
    return report


class Published(NamedTuple):
    """What `build_and_upload` did: the build (in the local staging folder) and the final upload pass."""

    build: BuildReport
    upload: UploadReport


def staging_folder(dest: str) -> Path:
    """The default local folder a build for `dest` (a URL) is staged in: `.shardgen-staging/<bucket_path>`."""
    return Path(".shardgen-staging") / dest.split("://", 1)[1].replace("/", "_")


def build_and_upload(cfg: BuildConfig, dest: str, *, progress: bool = True) -> Published:
    """Build `cfg` into its local folder `cfg.out` and publish it at `dest` (a folder URL) as it goes: the old
    indexes at `dest` go first, each finished shard starts uploading while the build goes on (MosaicML's pattern),
    then `upload` verifies every shard (re-sending any that differ) and writes the indexes, the manifest last.
    Raises UserError on access or network failures."""
    from ..build.pipeline import build_shards

    try:
        fs, root = fsspec.core.url_to_fs(dest, **with_timeouts(dest))
    except (ImportError, ValueError) as exc:  # an unknown protocol or its missing package: nothing has run yet
        raise UserError(f"{redact(dest)}: {exc} (for s3:// install s3fs, for gs:// gcsfs)") from None
    root = root.rstrip("/")
    try:
        remove_indexes(fs, root)  # readers never see an old manifest over the new build's shards
    except client_errors() as exc:
        raise _error(dest, exc) from exc
    with ThreadPoolExecutor(2) as pool:
        pending = []
        report = build_shards(cfg, on_shard=lambda p: pending.append(pool.submit(fs.put_file, str(p),
                                                                                 f"{root}/{p.name}")))
        try:
            for sent in pending:
                sent.result()
        except client_errors() as exc:
            raise _error(dest, exc) from exc
    return Published(report, upload(cfg.out, dest, progress=progress))
