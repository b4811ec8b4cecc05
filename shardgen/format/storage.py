"""Where shards live: local paths and any fsspec URL (s3://, gs://, https://, file://) behind one small API.

Both the writer side (`verify`, `upload`) and the reader side (`loaders`) open shards through these functions,
so a remote prefix behaves exactly like a local folder.

HTTP(S) files are opened as plain sequential streams (one GET): every reader reads a shard front to back, and
many servers (`python -m http.server` among them) ignore Range, which fsspec's default block-wise HTTP file needs
past its first 5 MB block. A reader that starts inside a shard (`open_at`) asks for the rest with one Range
request, and reads past the bytes before `start` when the server ignores it. A password in a URL never reaches a message: every error
raised here names the URL through `redact`.

Remote reads carry connect/read timeouts (`with_timeouts`), so a frozen server fails an attempt within about a
minute instead of stalling for the clients' defaults (s3fs × botocore retries: ~7 minutes per attempt); the
loader then warns and retries, or raises. A timeout never fires while bytes keep coming, so `read_bytes` (every
metadata read: manifest, indexes, sizes.json) stops at `METADATA_MAX_BYTES`; an HTTP redirect to another origin
(scheme, host, port) is refused, as the manifest's shard names are.

Local files named by a user or a manifest are opened by `open_local` only: regular files (a FIFO would block,
`/dev/zero` never ends, a directory is no image), their size checked before a byte is read, and, given a root,
inside it once symlinks are resolved.
"""

from __future__ import annotations

import io
import os
import socket
import stat
from urllib.parse import urlparse

import fsspec

from .errors import SchemaError, UserError
from .redact import has_secret, redact


def is_remote(url: str) -> bool:
    scheme = urlparse(str(url)).scheme
    return len(scheme) > 1 and scheme != "file"  # a drive letter ("c:") is not a scheme


def join(base: str, name: str) -> str:
    base = str(base)
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return os.path.join(base, name)


CONNECT_TIMEOUT_S = 10.0  # seconds to open a connection
READ_TIMEOUT_S = 15.0  # seconds without a byte on an open connection
S3_READ_RETRIES = 2  # s3fs's tries per call when reading (its default, 5, makes a frozen endpoint take minutes)


def with_timeouts(url: str, storage_options: dict | None = None, *, reading: bool = False) -> dict:
    """`storage_options` for `url` with connect/read timeouts added where the caller set none. HTTP(S): aiohttp's
    socket timeouts instead of its 5-minute total. S3 `reading`: botocore's own retries off too (s3fs retries a
    timed-out call itself; `open_url` allows it `S3_READ_RETRIES` tries), so a frozen endpoint fails a read
    attempt in about a minute; the options differ from a writer's, so readers get a filesystem instance of their
    own (fsspec caches instances by options) and uploads keep s3fs's retries. Options the caller gave win, key by
    key."""
    opts = dict(storage_options or {})
    scheme = str(url).split("://", 1)[0].lower() if "://" in str(url) else ""
    if scheme not in ("http", "https", "ftp", "sftp", "ssh", "smb") and has_secret(url):
        # s3fs and gcsfs take `key:secret@bucket` for a bucket name and fail with the secret in their message
        raise UserError(f"{redact(url)}: {scheme}:// takes no credentials in the URL; set them where its client "
                        "reads them (for s3:// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)")
    if scheme in ("s3", "s3a"):
        config = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S}
        if reading:
            config["retries"] = {"max_attempts": 1}
        opts["config_kwargs"] = {**config, **opts.get("config_kwargs", {})}
    elif scheme in ("http", "https"):
        import aiohttp

        client = dict(opts.get("client_kwargs", {}))
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S,
                                                           sock_read=READ_TIMEOUT_S))
        client.setdefault("trace_configs", [_same_origin_redirects()])
        opts["client_kwargs"] = client
    return opts


_REDIRECT_GUARD = None  # one TraceConfig for every client: fsspec caches filesystems by their options' repr


def _same_origin_redirects():
    """An aiohttp trace that refuses a redirect to another origin (scheme, host, port) than the request's: a
    shard server must not send the reader to a host the user never named (the manifest's names stay in its
    folder for the same reason). Raised as UserError: retrying would meet the same redirect."""
    global _REDIRECT_GUARD
    if _REDIRECT_GUARD is None:
        import aiohttp
        from yarl import URL  # aiohttp's URL type

        async def check(session, context, params) -> None:
            target = params.url.join(URL(params.response.headers.get("Location", "")))
            if target.origin() != params.url.origin():
                raise UserError(f"{redact(str(params.url))}: the server redirects to {redact(str(target))}, "
                                "another origin; refusing to follow (give the final URL instead)")

        _REDIRECT_GUARD = aiohttp.TraceConfig()
        _REDIRECT_GUARD.on_request_redirect.append(check)
        _REDIRECT_GUARD.freeze()
    return _REDIRECT_GUARD


def _is_http(url: str) -> bool:
    return str(url).split("://", 1)[0].lower() in ("http", "https")


def open_url(url: str, mode: str = "rb", **storage_options):
    """Open a local path or fsspec URL; the caller closes it. HTTP(S) URLs open as sequential streams (no Range).

    Raises FileNotFoundError when the file is not there (for HTTP: status 404 or 410), and for HTTP(S)
    PermissionError when access is refused (401, 403) and ConnectionError when the server cannot be reached or
    answers with another error. Every message names the URL without its password."""
    url = str(url)
    reading = "r" in mode and "+" not in mode
    if mode == "rb" and not is_remote(url):
        return open_local(url.removeprefix("file://"))
    own_retries = "retries" in storage_options.get("config_kwargs", {})
    storage_options = with_timeouts(url, storage_options, reading=reading)
    if _is_http(url) and mode == "rb":
        return _open_http(url, storage_options)
    try:
        opener = fsspec.open(url, mode, **storage_options)
        if reading and not own_retries and "s3" in protocols(opener.fs):
            # the readers' own instance (see `with_timeouts`); they retry themselves (the loader: with a warning)
            opener.fs.retries = min(getattr(opener.fs, "retries", S3_READ_RETRIES), S3_READ_RETRIES)
        return opener.open()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{redact(url)}: not found") from exc


def open_at(url: str, start: int, **storage_options):
    """`open_url(url)` positioned at byte `start`: a local or S3 file seeks there; HTTP(S) asks for the rest
    with a Range request (a server that ignores Range sends it all: the bytes before `start` are read past)."""
    if start and _is_http(url):
        return _open_http(url, with_timeouts(url, storage_options, reading=True), start=start)
    fh = open_url(url, "rb", **storage_options)
    if start:
        try:
            fh.seek(start)
        except BaseException:
            fh.close()
            raise
    return fh


def protocols(fs) -> tuple[str, ...]:
    """The protocol names of an fsspec filesystem (one string or several)."""
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def client_errors() -> tuple[type[BaseException], ...]:
    """What storage clients raise for network and access failures: OSError, and the HTTP/S3 clients' own errors
    (only those of clients already imported: an error class of a module nobody loaded cannot be raised)."""
    import sys

    errors: list[type[BaseException]] = [OSError]
    if "aiohttp" in sys.modules:
        errors.append(sys.modules["aiohttp"].ClientError)
    if "botocore.exceptions" in sys.modules:
        exceptions = sys.modules["botocore.exceptions"]
        errors += [exceptions.BotoCoreError, exceptions.ClientError]
    return tuple(errors)


def _open_http(url: str, storage_options: dict, *, start: int = 0):
    import aiohttp  # fsspec's HTTP filesystem is built on it; imported here so local readers never load it

    try:
        opener = fsspec.open(url, "rb", **{"block_size": 0, **storage_options})  # 0: a streaming file
        if not start:
            fh = opener.open()
        else:  # the instance's own headers (credentials) and the range
            headers = {**opener.fs.kwargs.get("headers", {}), "Range": f"bytes={start}-"}
            fh = opener.fs.open(opener.path, "rb", block_size=0, headers=headers)
    except UserError:  # a redirect off the origin (`_same_origin_redirects`)
        raise
    except (OSError, aiohttp.ClientError) as exc:
        raise _http_error(url, exc) from None  # not chained: the cause's text holds the URL unredacted
    stream = _HTTPStream(fh, url, aiohttp.ClientError)
    if start and getattr(getattr(fh, "r", None), "status", 206) != 206:  # Range ignored: the whole body comes
        _read_past(stream, start)
    return stream


def _read_past(stream, n: int) -> None:
    """Read and drop `n` bytes of `stream` (a server that ignored a Range request)."""
    while n > 0:
        got = len(stream.read(min(n, 1 << 20)))
        if not got:
            raise ConnectionError(f"{redact(stream.url)}: body ended before the requested range")
        n -= got


class _HTTPStream(io.RawIOBase):
    """An HTTP body read front to back (fsspec's streaming file), whose failures mid-body (a dropped connection, a
    stall past the read timeout) are ConnectionError or TimeoutError naming the URL, like the failures to open
    it: OSErrors, which every reader retries as network failures."""

    def __init__(self, fh, url: str, client_error: type[Exception]) -> None:
        super().__init__()
        self._fh, self.url, self._client_error = fh, url, client_error

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._fh.read(size)
        except self._client_error as exc:
            raise ConnectionError(f"{redact(self.url)}: connection lost ({type(exc).__name__}: "
                                  f"{redact(exc)})") from None
        except TimeoutError as exc:  # fsspec's FSTimeoutError (an asyncio timeout): a server that stalls mid-body
            raise TimeoutError(f"{redact(self.url)}: the server stopped sending ({type(exc).__name__}, no byte for "
                               f"{READ_TIMEOUT_S:g} s)") from None

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


def _http_error(url: str, exc: Exception) -> OSError | UserError:
    """What an HTTP open failure means. fsspec reports any failure of its size probe as FileNotFoundError, with
    the real cause (a status, a refused connection, a refused redirect) chained."""
    cause = exc.__cause__ if isinstance(exc, FileNotFoundError) and exc.__cause__ is not None else exc
    if isinstance(cause, UserError):  # `_same_origin_redirects`
        return cause
    where = redact(url)
    status = getattr(cause, "status", None)
    if status in (404, 410) or (cause is exc and isinstance(exc, FileNotFoundError)):
        return FileNotFoundError(f"{where}: not found (HTTP {status or 404})")
    if status in (401, 403):
        return PermissionError(f"{where}: access denied (HTTP {status}); check the credentials")
    if status is not None:
        return ConnectionError(f"{where}: HTTP {status} {redact(getattr(cause, 'message', ''))}".rstrip())
    return ConnectionError(f"{where}: cannot connect ({type(cause).__name__}: {redact(cause)})")


def access_error(url: str, exc: OSError) -> UserError:
    """A storage failure that is the user's to fix (credentials, network, a missing bucket) as one line naming
    the URL, without its password."""
    if isinstance(exc, PermissionError):
        return UserError(f"{redact(url)}: access denied ({redact(exc)}); check the storage credentials")
    return UserError(f"{redact(url)}: cannot read ({type(exc).__name__}: {redact(exc)})")


# The most a metadata file (manifest, sizes.json, a wids index) may hold: a manifest entry is ~150 bytes, so this
# admits ~400k shards (~400M samples at the default 1000 per shard), and stops a server streaming without end.
METADATA_MAX_BYTES = 64 << 20
# The most an input file that is read whole (COCO annotations, a Karpathy split file, a caption table) may hold:
# COCO's largest annotations file is 66 MB, dataset_coco.json 144 MB, CC12M's caption table 2.6 GB.
INPUT_MAX_BYTES = 4 << 30
# Tries of a remote read that failed for network reasons (a refused or cut connection, a read timeout) before
# the caller gives up: an input file (table, tar, annotations) and each image of a build; the wait before the
# second try is RETRY_BACKOFF_S, doubled each time.
READ_TRIES = 3
RETRY_BACKOFF_S = 1.0
# The most an image file named by a user (a COCO folder, --unseen, a dataset's cache) may hold: COCO's are < 1 MB,
# a 50 Mpx camera JPEG ~30 MB; a larger file is refused before it is read.
IMAGE_MAX_BYTES = 256 << 20


def read_text(url: str, *, max_bytes: int | None = None, **storage_options) -> str:
    """`read_bytes` as UTF-8 text."""
    return read_bytes(url, max_bytes=max_bytes, **storage_options).decode("utf-8")


def read_bytes(url: str, *, max_bytes: int | None = None, **storage_options) -> bytes:
    """The whole file at `url`, at most `max_bytes` (default `METADATA_MAX_BYTES`) of it: a longer one raises
    SchemaError naming the URL once `max_bytes + 1` bytes came (a read timeout never fires while bytes keep
    coming)."""
    max_bytes = METADATA_MAX_BYTES if max_bytes is None else max_bytes
    chunks, size = [], 0
    with open_url(url, "rb", **storage_options) as fh:
        while size <= max_bytes and (chunk := fh.read(min(8 << 20, max_bytes + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    if size > max_bytes:
        raise SchemaError(f"{redact(url)}: more than {max_bytes} bytes; refusing to read further (metadata "
                          "files and shards are bounded by what their manifest says)")
    return b"".join(chunks)


class RefusedFile(OSError):
    """A local file `open_local` does not read; `reason` is a short counter name: `not_a_file`, `too_large` or
    `outside_root`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def open_local(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
               max_bytes: int | None = None) -> io.BufferedReader:
    """Open a local file named by a user or a manifest for reading: only a regular file (not a FIFO, which would
    block the open or the read, a device such as /dev/zero, or a directory), of at most `max_bytes`, and when
    `root` is given, inside `root` once symlinks are resolved. Raises RefusedFile (an OSError naming the path)
    or the OSError of the open (FileNotFoundError, PermissionError)."""
    real = os.path.realpath(path)
    if root is not None:
        base = os.path.realpath(root)
        if os.path.commonpath([real, base]) != base:
            raise RefusedFile("outside_root", f"{path}: leads outside {root} (to {real}); refusing to read it")
    # O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting; cleared below for files
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) \
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a file"
            raise RefusedFile("not_a_file", f"{path}: is {kind}, not a regular file; refusing to read it")
        if max_bytes is not None and info.st_size > max_bytes:
            raise RefusedFile("too_large", f"{path}: {info.st_size} bytes, more than the {max_bytes} allowed")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_local(path: str | os.PathLike, *, max_bytes: int, root: str | os.PathLike | None = None) -> bytes:
    """A whole local file through `open_local`, never more than `max_bytes` (a file that grows while read
    included)."""
    with open_local(path, root=root, max_bytes=max_bytes) as fh:
        # ask for the size fstat gives (+1 to see growth), not for max_bytes: a read(n) allocates n bytes first,
        # and a 256 MiB buffer per image was most of the checked opener's cost
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(min(size, max_bytes) + 1)
        if len(data) > size:  # the file grew while read: take the rest, still never more than max_bytes + 1
            data += fh.read(max_bytes + 1 - len(data))
    if len(data) > max_bytes:
        raise RefusedFile("too_large", f"{path}: more than the {max_bytes} bytes allowed")
    return data


def reachable(url: str, *, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to `url`'s host and port opens within `timeout` s: a quick probe before a client
    that would retry for a long time against a host that cannot be reached (offline machines)."""
    parts = urlparse(url)
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
