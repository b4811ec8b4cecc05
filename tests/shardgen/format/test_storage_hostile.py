"""Hostile input, round two, at the storage layer: the one opener of user-named local files (regular files only,
sizes checked before reading, nothing outside the root), the one reader of remote metadata (a size cap), and
HTTP redirects off the base URL's origin."""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shardgen.format import (
    RefusedFile,
    SchemaError,
    UserError,
    open_local,
    open_url,
    read_bytes,
    read_local,
    read_manifest,
)
from shardgen.format import storage

from ...bounded import within
from ...netutil import FileServer


def _fifo(path):
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("make", ["fifo", "dev_zero", "directory"])
def test_open_local_opens_regular_files_only(tmp_path, make):
    path = tmp_path / "x.jpg"
    if make == "fifo":
        _fifo(path)
    elif make == "dev_zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    with pytest.raises(RefusedFile, match="not a regular file") as info:
        within(10, open_local, path)
    assert info.value.reason == "not_a_file" and str(path) in str(info.value)


def test_open_url_refuses_a_fifo_in_place_of_a_shard(tmp_path):
    """Every local reader of shards (the loader, verify) goes through open_url."""
    with pytest.raises(RefusedFile, match="FIFO"):
        within(10, open_url, str(_fifo(tmp_path / "train-000000.tar")))
    with pytest.raises(RefusedFile):
        within(10, read_bytes, "file://" + str(_fifo(tmp_path / "manifest.json")))


def test_open_local_checks_the_size_before_reading(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(b"x" * 1000)
    with pytest.raises(RefusedFile, match="1000 bytes") as info:
        read_local(path, max_bytes=999)
    assert info.value.reason == "too_large"
    assert read_local(path, max_bytes=1000) == b"x" * 1000


@pytest.mark.parametrize("max_bytes, whole", [(100, True), (25, False)])
def test_read_local_takes_a_file_that_grows_while_read_up_to_the_cap(tmp_path, monkeypatch, max_bytes, whole):
    """read_local asks for the size it found (not for max_bytes, which would allocate the whole cap per image);
    a file that grows after that is still read whole, or refused past the cap."""
    path = tmp_path / "growing.jpg"
    path.write_bytes(b"a" * 10)
    real_fstat = os.fstat

    def fstat_then_grow(fd):
        info = real_fstat(fd)
        with open(path, "ab") as fh:  # 20 more bytes land after the size was taken
            fh.write(b"b" * 20)
        return info

    opened = open_local

    def open_then_patch(*args, **kwargs):  # only read_local's own size check sees the growth
        fh = opened(*args, **kwargs)
        monkeypatch.setattr(storage.os, "fstat", fstat_then_grow)
        return fh

    monkeypatch.setattr(storage, "open_local", open_then_patch)
    if whole:
        assert read_local(path, max_bytes=max_bytes) == b"a" * 10 + b"b" * 20
    else:
        with pytest.raises(RefusedFile, match="more than the 25 bytes") as info:
            read_local(path, max_bytes=max_bytes)
        assert info.value.reason == "too_large"


def test_a_folder_replaced_by_a_link_after_a_read_is_refused(tmp_path):
    """Every read resolves its path anew: a subfolder swapped for a link out of the root between two reads (a
    shared image folder changed during a build) is refused on the second read, not trusted from the first."""
    root, outside = tmp_path / "images", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.jpg").write_bytes(b"ok")
    (outside / "a.jpg").write_bytes(b"secret")
    assert read_local(root / "sub" / "a.jpg", root=root, max_bytes=10) == b"ok"
    (root / "sub" / "a.jpg").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(outside)
    with pytest.raises(RefusedFile) as info:
        read_local(root / "sub" / "a.jpg", root=root, max_bytes=10)
    assert info.value.reason == "outside_root"


def test_open_local_refuses_symlinks_out_of_the_root(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "secret.txt"
    root.mkdir()
    outside.write_bytes(b"secret")
    (root / "a.jpg").symlink_to(outside)
    (root / "inside.jpg").write_bytes(b"ok")
    (root / "b.jpg").symlink_to(root / "inside.jpg")
    with pytest.raises(RefusedFile, match="outside") as info:
        open_local(root / "a.jpg", root=root)
    assert info.value.reason == "outside_root"
    with pytest.raises(RefusedFile):
        open_local(root / ".." / "secret.txt", root=root)
    assert read_local(root / "b.jpg", root=root, max_bytes=10) == b"ok"  # a link inside the root is fine
    linked_root = tmp_path / "linked"
    linked_root.symlink_to(root)  # the root itself may be a link (a COCO folder on another disk)
    assert read_local(linked_root / "inside.jpg", root=linked_root, max_bytes=10) == b"ok"


class _Endless(BaseHTTPRequestHandler):
    """Answers every GET with a body that never ends (for at most 30 s)."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                self.wfile.write(b"{" * 65536)
        except OSError:  # the client went away
            pass


@pytest.fixture
def endless_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_manifest_streamed_without_end_stops_at_the_cap(endless_server, monkeypatch):
    monkeypatch.setattr(storage, "METADATA_MAX_BYTES", 1 << 20)
    with pytest.raises(SchemaError, match="more than 1048576 bytes"):
        read_manifest(endless_server + "/shards")


def test_the_loader_and_verify_stop_at_the_cap_too(endless_server, monkeypatch):
    from loaders import make_loader
    from loaders.errors import SourceError
    from shardgen.publish.verify import verify

    monkeypatch.setattr(storage, "METADATA_MAX_BYTES", 1 << 20)
    with pytest.raises(SourceError, match="more than"):
        make_loader(endless_server + "/shards", batch_size=2)
    assert "more than" in verify(endless_server + "/shards").problems[0]


def _redirecting_server(target: str | None):
    """A server answering /old/* with a 302 to `target` + the path (None: to /new/* on itself), /new/* with {}."""

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            if self.path.startswith("/new/"):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            self.send_response(302)
            self.send_header("Location", (target or "") + self.path.replace("/old/", "/new/"))
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_a_redirect_to_another_origin_is_refused():
    with FileServer({"/new/manifest.json": b"{}"}) as elsewhere:
        httpd = _redirecting_server(elsewhere.url)
        try:
            with pytest.raises(UserError, match="another origin"):
                read_bytes(f"http://127.0.0.1:{httpd.server_address[1]}/old/manifest.json")
            assert not elsewhere.requests
        finally:
            httpd.shutdown()
            httpd.server_close()


def test_a_redirect_on_the_same_origin_is_followed():
    httpd = _redirecting_server(None)
    try:
        assert read_bytes(f"http://127.0.0.1:{httpd.server_address[1]}/old/manifest.json") == b"{}"
    finally:
        httpd.shutdown()
        httpd.server_close()
