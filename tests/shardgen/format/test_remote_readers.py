"""The format layer's storage against loopback servers: HTTP shards stream front to back from servers that ignore
Range (as `python -m http.server` does), a refused connection is not reported as "not found", a password inside a
URL never reaches a message, and re-uploading over a prefix never leaves the old manifest over new shards."""

from __future__ import annotations

import functools
import io
import json
import shutil
import tarfile
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from shardgen.publish.export import export_clip_benchmark
from shardgen.format import (
    UserError,
    iter_samples,
    load_manifest,
    open_url,
    read_bytes,
    read_manifest,
    read_text,
    redact,
)
from shardgen.publish.show import show
from shardgen.publish.upload import upload
from shardgen.publish.verify import verify

from ...helpers import free_port, rewrite_member
from ...netutil import FileServer


@pytest.fixture
def plain_http_server(tmp_path):
    """`python -m http.server` itself (no Range support), serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _big_tar(n_samples: int = 12, member_bytes: int = 1 << 20) -> bytes:
    """~12 MB of samples: more than two of fsspec's 5 MB HTTP blocks."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(n_samples):
            for ext, data in (("jpg", rng.bytes(member_bytes)), ("txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(f"{i:012d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_http_shards_stream_from_a_server_without_range_support(plain_http_server):
    root, url = plain_http_server
    data = _big_tar()
    (root / "big.tar").write_bytes(data)
    request = urllib.request.Request(f"{url}/big.tar", headers={"Range": "bytes=6000000-6000009"})
    with urllib.request.urlopen(request) as resp:  # the server ignores Range: the case fsspec's blocks fail on
        assert resp.status == 200 and len(resp.read()) == len(data)
    with open_url(f"{url}/big.tar") as fh:
        got = [(key, {e: bytes(v) for e, v in fields.items()}) for key, fields in iter_samples(fh)]
    assert got == list(iter_samples(io.BytesIO(data))) and len(got) == 12
    assert read_bytes(f"{url}/big.tar") == data


def test_show_export_and_verify_read_shards_over_plain_http(plain_http_server, train_shards, tmp_path):
    root, url = plain_http_server
    shutil.copytree(train_shards, root / "t")
    base = f"{url}/t"
    assert verify(base).ok
    stats = show(base, tmp_path / "grid.png", n=4)
    assert stats.n_images == 48
    assert export_clip_benchmark(base, tmp_path / "cb", samples_per_shard=20)["n_samples"] == 48


def test_no_range_requests_are_sent_while_streaming():
    data = _big_tar(n_samples=6)
    with FileServer({"/s.tar": data}, ranges=False) as srv:
        with open_url(f"{srv.url}/s.tar") as fh:
            assert sum(1 for _ in iter_samples(fh)) == 6
        assert [rng for path, rng in srv.requests] == [None]  # one plain GET, front to back


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:secret@host/x", "https://user:****@host/x"),
    ("https://token@host:8443/a?b=c", "https://****@host:8443/a?b=c"),
    ("http://us%40er:p%40ss:w@h/p", "http://us%40er:****@h/p"),
    ("s3://bucket/prefix/manifest.json", "s3://bucket/prefix/manifest.json"),
    ("/local/path/with@sign", "/local/path/with@sign"),
    ("failed: http://a:b@h1/x and https://c:d@h2/y", "failed: http://a:****@h1/x and https://c:****@h2/y"),
])
def test_redact_hides_passwords_like_pip(url, shown):
    assert redact(url) == shown


def test_a_refused_connection_is_not_reported_as_not_found(tmp_path):
    url = f"http://user:secret@127.0.0.1:{free_port()}/shards"
    for call in (lambda: open_url(f"{url}/x.tar"), lambda: read_manifest(url)):
        with pytest.raises(ConnectionError, match="cannot connect") as info:
            call()
        assert not isinstance(info.value, FileNotFoundError) and "secret" not in str(info.value)
        assert "user:****@127.0.0.1" in str(info.value)
    for call in (lambda: verify(url), lambda: show(url, tmp_path / "g.png"), lambda: load_manifest(url)):
        with pytest.raises(UserError, match="cannot read") as info:
            call()
        assert "secret" not in str(info.value) and "missing" not in str(info.value)


def test_http_statuses_say_what_they_mean(train_shards, tmp_path):
    with FileServer(root=train_shards.parent) as srv:
        base = srv.url.replace("http://", "http://user:secret@") + f"/{train_shards.name}"
        srv.status[f"/{train_shards.name}/train-000001.tar"] = 403
        srv.status[f"/{train_shards.name}/train-000002.tar"] = 500
        with pytest.raises(FileNotFoundError, match=r"user:\*\*\*\*@.*/nope\.tar: not found") as info:
            open_url(f"{base}/nope.tar")
        assert "secret" not in str(info.value)
        with pytest.raises(PermissionError, match="access denied"):
            open_url(f"{base}/train-000001.tar")
        with pytest.raises(ConnectionError, match="HTTP 500"):
            open_url(f"{base}/train-000002.tar")
        with pytest.raises(UserError, match=r"train-000001\.tar: access denied") as info:
            verify(base)  # credentials are the user's to fix: one line, not a list of problems
        assert "secret" not in str(info.value)
        report = verify(f"{base}/nothing-here")
        assert report.problems == [(f"{redact(base)}/nothing-here/manifest.json: missing (not a shardgen output "
                                    "folder, or build unfinished)")]
        assert json.loads(read_text(f"{base}/manifest.json"))["split"] == "train"


def _other_build(train_shards, where):
    """A different build of the same split: shard 0's first sample's json holds one more key, the manifest says
    so."""
    import hashlib

    shutil.copytree(train_shards, where)
    first = {"done": False}

    def edit(name, data):
        if name.endswith(".json") and not first["done"]:
            first["done"] = True
            return json.dumps({**json.loads(data), "rebuilt": True}).encode()
        return None

    rewrite_member(where / "train-000000.tar", edit)
    manifest = json.loads((where / "manifest.json").read_text())
    shard = where / "train-000000.tar"
    manifest["shards"][0].update(n_bytes=shard.stat().st_size, sha256=hashlib.sha256(shard.read_bytes()).hexdigest())
    (where / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return where


def test_reupload_removes_the_old_manifest_before_any_shard(tmp_path, train_shards, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    dest = tmp_path / "bucket" / "train"
    upload(train_shards, f"file://{dest}", progress=False)
    old_manifest = (dest / "manifest.json").read_text()
    other = _other_build(train_shards, tmp_path / "other")

    real_put, seen = LocalFileSystem.put_file, []

    def dying_put(self, lpath, rpath, *args, **kwargs):
        seen.append((rpath.rsplit("/", 1)[-1], (dest / "manifest.json").exists(), (dest / "sizes.json").exists()))
        raise ConnectionResetError("network dropped")

    monkeypatch.setattr(LocalFileSystem, "put_file", dying_put)
    with pytest.raises(UserError, match="network dropped"):
        upload(other, f"file://{dest}", workers=1, progress=False)
    # the old indexes were gone before the first shard (shard 0 differs, so do its tar and .idx; the rest match)
    assert seen and set(seen) <= {("train-000000.tar", False, False), ("train-000000.idx", False, False)}
    assert not (dest / "manifest.json").exists()  # so no reader sees the old manifest over a mix of shards

    monkeypatch.setattr(LocalFileSystem, "put_file", real_put)
    report = upload(other, f"file://{dest}", progress=False)
    # shards go up in parallel (their order is the threads'), the indexes after them, the manifest last
    assert "train-000000.tar" in report.uploaded[:-3] and report.uploaded[-1] == "manifest.json"
    assert (dest / "manifest.json").read_text() == (other / "manifest.json").read_text() != old_manifest
    assert verify(str(dest)).ok


def test_a_connection_lost_mid_shard_is_a_clear_message(train_shards, tmp_path):
    with FileServer(root=train_shards.parent) as srv:
        base = srv.url.replace("http://", "http://user:secret@") + f"/{train_shards.name}"
        srv.cut_once[f"/{train_shards.name}/train-000002.tar"] = 50_000
        with open_url(f"{base}/train-000002.tar") as fh, pytest.raises(ConnectionError, match="connection lost"):
            fh.read()
        srv.cut_once[f"/{train_shards.name}/train-000002.tar"] = 50_000
        problems = verify(base).problems
        assert len(problems) == 1 and problems[0].startswith("train-000002.tar: cannot read (")
        assert "connection lost" in problems[0] and "secret" not in problems[0]
