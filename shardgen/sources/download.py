"""`shardgen download`: COCO 2014 onto disk, from Kaggle (the seed's way) or the official zips.

Official zips: parallel HTTP downloads with progress bars, resume of partial files (HTTP Range), retries with
backoff for transient faults (a dropped connection, a timeout) and none for a host that cannot be resolved or
refuses the connection (one line with what to try instead), size check against the server's length and MD5 check
where known, then extraction that refuses members escaping the target folder (`..`, absolute paths, links) and
zips that would expand beyond what the official zip holds (a zip bomb). Idempotent: what is complete is not
fetched again; a failed run leaves no empty folders behind.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import UserError
from ..format.digest import file_digests
from ..format.coco_folders import describe_layout

DEFAULT_BASE_URL = "http://images.cocodataset.org/"
KAGGLE_DATASET = "jeffaudi/coco-2014-dataset-for-yolov3"


@dataclass(frozen=True)
class RemoteFile:
    name: str  # key: annotations | train | val
    path: str  # relative to the base URL
    md5: str | None
    max_extract_bytes: int  # what the zip may expand to; the official zip's content with room to spare

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


GB = 10**9
COCO_FILES = {  # MD5s as published alongside the official COCO 2014 zips
    # ≈ 0.8 GB of JSON (captions, instances, keypoints for train and val)
    "annotations": RemoteFile("annotations", "annotations/annotations_trainval2014.zip",
                              "0a379cfc70b0e71301e0f377548639bd", max_extract_bytes=2 * GB),
    # 82 783 JPEGs, ≈ 13.5 GB
    "train": RemoteFile("train", "zips/train2014.zip", "0da8c0bd3d6becc4dcb32757491aca88", max_extract_bytes=20 * GB),
    # 40 504 JPEGs, ≈ 6.6 GB
    "val": RemoteFile("val", "zips/val2014.zip", "a3d79f5ed8d289b7a7554ce06a5782b3", max_extract_bytes=10 * GB),
}
# JPEGs do not compress (≈1×) and COCO's JSON ≈5×; deflate reaches ≈1000× only on made-up data such as zeros.
MAX_COMPRESSION_RATIO = 50
RATIO_EXEMPT_BYTES = 1 << 20  # a small member may compress well (an empty file) without harm
OFFLINE_HINT = ("check the network, or use a mirror with --base-url URL, or download from Kaggle with "
                "--source kaggle")


def unreachable_reason(exc: BaseException) -> str | None:
    """Why a connection could not even be made (name resolution, refused, no route), found anywhere in the chain
    of causes that requests/urllib3 wrap it in; None for faults worth retrying (timeouts, dropped connections)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror):
            return f"cannot resolve the host name ({err.strerror or err})"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, OSError) and err.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "network unreachable"
        stack += [err.__cause__, err.__context__, getattr(err, "reason", None)]
        stack += [a for a in err.args if isinstance(a, BaseException)]
    return None


def fetch(url: str, dest: Path, *, md5: str | None = None, retries: int = 5, backoff: float = 1.0,
          timeout: float = 30.0, position: int = 0, progress: bool = True) -> Path:
    """Download url → dest, resuming `dest.part` with HTTP Range; verify length and MD5. Returns dest."""
    import requests
    from tqdm.auto import tqdm

    part = dest.with_name(dest.name + ".part")
    total = None
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=timeout) as resp:
                if resp.status_code == 416 and total is not None and have == total:
                    break  # already complete
                if resp.status_code not in (200, 206):
                    raise UserError(f"{url}: HTTP {resp.status_code} {resp.reason}")
                if resp.status_code == 200:
                    have = 0  # server ignored the Range: start over
                    total = int(resp.headers.get("Content-Length", 0)) or None
                else:
                    total = int(resp.headers["Content-Range"].rsplit("/", 1)[-1])
                with open(part, "ab" if have else "wb") as fh, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, position=position,
                        disable=not progress, leave=True) as bar:
                    for block in resp.iter_content(1 << 20):
                        fh.write(block)
                        bar.update(len(block))
            size = part.stat().st_size
            if total is not None and size < total:
                raise ConnectionError(f"connection closed at {size} of {total} bytes")
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                ConnectionError) as exc:
            reason = unreachable_reason(exc)
            if reason is not None:  # retrying cannot help: say what can
                raise UserError(f"{url}: {reason}; {OFFLINE_HINT}") from exc
            if attempt == retries:
                raise UserError(f"{url}: download failed after {retries + 1} attempts ({exc})") from exc
            time.sleep(backoff * 2 ** attempt)
    if total is not None and part.stat().st_size != total:
        raise UserError(f"{url}: got {part.stat().st_size} bytes, server said {total}")
    if md5 is not None:
        (got,) = file_digests(part, "md5")
        if got != md5:
            part.unlink()
            raise UserError(f"{url}: MD5 {got} does not match the expected {md5}; the partial file was removed, "
                            "rerun to download again (or check --base-url)")
    os.replace(part, dest)
    return dest


def _safe_members(archive: zipfile.ZipFile, target: Path) -> list[zipfile.ZipInfo]:
    """Refuse any member that would land outside `target` or is a link."""
    root = target.resolve()
    members = []
    for info in archive.infolist():
        name = info.filename
        p = PurePosixPath(name.replace("\\", "/"))
        mode = info.external_attr >> 16
        has_drive = bool(p.parts) and ":" in p.parts[0]
        if p.is_absolute() or ".." in p.parts or has_drive:
            raise UserError(f"{archive.filename}: refusing member {name!r} (escapes the target folder)")
        if stat.S_ISLNK(mode):
            raise UserError(f"{archive.filename}: refusing member {name!r} (symbolic link)")
        if not (root / name).resolve().is_relative_to(root):
            raise UserError(f"{archive.filename}: refusing member {name!r} (escapes the target folder)")
        members.append(info)
    return members


def _check_expansion(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], *, max_bytes: int) -> None:
    """Refuse a zip whose members would expand beyond `max_bytes` in all, or one member beyond what real data
    compresses to. Extraction never writes more than a member declares, so the declared sizes bound the disk used."""
    total = sum(info.file_size for info in members)
    if total > max_bytes:
        raise UserError(f"{archive.filename}: would expand to {total / GB:.2f} GB, more than the {max_bytes / GB:.2f} "
                        "GB allowed for it (a zip bomb?); if it is genuine, rerun with --max-extract-bytes SIZE")
    for info in members:
        if info.file_size > RATIO_EXEMPT_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(1, info.compress_size):
            raise UserError(f"{archive.filename}: member {info.filename!r} expands {info.compress_size} bytes to "
                            f"{info.file_size} (over {MAX_COMPRESSION_RATIO}x; a zip bomb?); refusing to extract")


def extract(zip_path: Path, target: Path, *, max_bytes: int) -> None:
    """Extract every member of `zip_path` under `target`, after checking them all (paths, links, expansion)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _safe_members(archive, target)
            _check_expansion(archive, members, max_bytes=max_bytes)
            for info in members:
                archive.extract(info, target)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{zip_path}: not a valid zip ({exc}); delete it and rerun") from exc


def download_coco(root: str | Path, *, splits: tuple[str, ...] = ("train", "val"),
                  base_url: str = DEFAULT_BASE_URL, md5: dict[str, str | None] | None = None, workers: int = 3,
                  keep_zips: bool = False, max_extract_bytes: int | None = None, progress: bool = True) -> list[str]:
    """Fetch and extract the annotation zip and the image zips of `splits`; returns what was done.

    `max_extract_bytes` replaces each zip's own expansion limit (`RemoteFile.max_extract_bytes`)."""
    root = Path(root)
    downloads = root / "downloads"
    created = [d for d in (root, downloads) if not d.exists()]
    root.mkdir(parents=True, exist_ok=True)
    wanted = [COCO_FILES["annotations"]] + [COCO_FILES[s] for s in splits]
    todo = [f for f in wanted if not (root / f".extracted-{f.filename}").is_file()]
    if not todo:
        return []
    downloads.mkdir(exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    checks = {f.name: f.md5 for f in todo} | (md5 or {})

    def one(item: tuple[int, RemoteFile]) -> Path:
        i, f = item
        dest = downloads / f.filename
        if dest.is_file():
            return dest
        return fetch(base + f.path, dest, md5=checks.get(f.name), position=i, progress=progress)

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            zips = list(pool.map(one, enumerate(todo)))
    except BaseException:  # nothing fetched: leave no empty folders (partial downloads stay, to resume)
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    done = []
    for f, z in zip(todo, zips):
        extract(z, root, max_bytes=max_extract_bytes or f.max_extract_bytes)
        (root / f".extracted-{f.filename}").write_text(json.dumps({"file": f.filename, "md5": checks.get(f.name)}))
        if not keep_zips:
            z.unlink()
        done.append(f.filename)
    return done


# -- Kaggle ---------------------------------------------------------------------------------------------------------
def kaggle_config_dir() -> Path:
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if home.exists() or not sys.platform.startswith("linux"):
        return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def find_kaggle_credentials(warn=print) -> str:
    """Where the kaggle package will find credentials (never their values). Raises UserError if nowhere."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN environment variable"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY environment variables"
    config = kaggle_config_dir() / "kaggle.json"
    if config.exists():
        try:
            data = json.loads(config.read_text())
            if not (isinstance(data, dict) and data.get("username") and data.get("key")):
                raise ValueError("needs 'username' and 'key'")
        except (OSError, ValueError) as exc:
            raise UserError(f"{config} is unreadable or malformed ({type(exc).__name__}: {exc}); download a fresh "
                            "token at kaggle.com → Settings → API → Create New Token") from None
        if config.stat().st_mode & 0o077:
            warn(f"warning: {config} is readable by other users; run: chmod 600 {config}")
        return str(config)
    for token in (Path.home() / ".kaggle" / "access_token", Path.home() / ".kaggle" / "access_token.txt"):
        if token.is_file():
            return str(token)
    where = "~/.kaggle/kaggle.json" + (f" (or {config})" if config != Path.home() / ".kaggle" / "kaggle.json" else "")
    raise UserError(f"no Kaggle credentials: put kaggle.json (kaggle.com → Settings → API → Create New Token) at "
                    f"{where} and chmod 600 it, or set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN)")


def download_kaggle(root: str | Path, *, dataset: str = KAGGLE_DATASET, progress: bool = True, warn=print) -> str:
    """Download and unzip the Kaggle COCO 2014 dataset into root; returns where credentials came from."""
    source = find_kaggle_credentials(warn=warn)
    root = Path(root)
    marker = root / f".extracted-kaggle-{dataset.replace('/', '_')}"
    if marker.is_file():
        return source
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        raise UserError("the Kaggle source needs the kaggle package: pip install 'coco-clip-shards[kaggle]'") from exc
    env = {}
    if source.endswith("kaggle.json"):  # hand the file we found to the client, whatever config dir it assumed
        data = json.loads(Path(source).read_text())
        env = {"KAGGLE_USERNAME": str(data["username"]), "KAGGLE_KEY": str(data["key"])}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        api = KaggleApi()
        api.authenticate()
        root.mkdir(parents=True, exist_ok=True)
        api.dataset_download_files(dataset, path=str(root), unzip=True, quiet=not progress)
    except SystemExit as exc:  # the client exits when it finds no credentials
        raise UserError(f"Kaggle authentication failed (credentials from {source})") from exc
    except Exception as exc:  # noqa: BLE001 - the kaggle client raises many types; report one line
        raise UserError(f"Kaggle download of {dataset} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    marker.write_text(dataset + "\n")
    return source


def report(root: str | Path, *, shardgen: str = "shardgen") -> str:
    """The layout found (the same discovery `shardgen build` uses) and the next command (`shardgen`: how the
    command is typed here)."""
    return (f"layout under {root}:\n{describe_layout(root)}\nnext: {shardgen} build --coco-root {root} --split train "
            "--out shards/train")
