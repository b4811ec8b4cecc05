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
loader then warns and retries, or raises.
"""

from __future__ import annotations

import io
import os
import re
import socket
from urllib.parse import urlparse

import fsspec

from .errors import UserError

_NETLOC = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^/?#\s]*)")


def _redact_netloc(match: re.Match) -> str:
    netloc = match["netloc"]
    if "@" not in netloc:
        return match[0]
    userinfo, host = netloc.rsplit("@", 1)
    user, has_password, _ = userinfo.partition(":")
    return f"{match['scheme']}{user + ':****' if has_password else '****'}@{host}"


def redact(text: str) -> str:
    """`text` (a URL, or a message holding URLs) with the credentials of every URL hidden, as pip does:
    `https://user:secret@host/x` → `https://user:****@host/x`; a lone token (`https://token@host`) → `****@host`."""
    text = str(text)
    return _NETLOC.sub(_redact_netloc, text) if "@" in text else text


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
        opts["client_kwargs"] = client
    return opts


def _is_http(url: str) -> bool:
    return str(url).split("://", 1)[0].lower() in ("http", "https")


def open_url(url: str, mode: str = "rb", **storage_options):
    """Open a local path or fsspec URL; the caller closes it. HTTP(S) URLs open as sequential streams (no Range).

    Raises FileNotFoundError when the file is not there (for HTTP: status 404 or 410), and for HTTP(S)
    PermissionError when access is refused (401, 403) and ConnectionError when the server cannot be reached or
    answers with another error. Every message names the URL without its password."""
    url = str(url)
    reading = "r" in mode and "+" not in mode
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
    """An HTTP body read front to back (fsspec's streaming file), whose failures mid-body (a dropped connection)
    are ConnectionErrors naming the URL, like the failures to open it."""

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

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


def _http_error(url: str, exc: Exception) -> OSError:
    """What an HTTP open failure means. fsspec reports any failure of its size probe as FileNotFoundError, with
    the real cause (a status, a refused connection) chained."""
    cause = exc.__cause__ if isinstance(exc, FileNotFoundError) and exc.__cause__ is not None else exc
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


def read_text(url: str, **storage_options) -> str:
    with open_url(url, "rb", **storage_options) as fh:
        return fh.read().decode("utf-8")


def read_bytes(url: str, **storage_options) -> bytes:
    with open_url(url, "rb", **storage_options) as fh:
        return fh.read()


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
