"""Hostile input, round three (issue 29), webdataset input: a member claiming 10^15 bytes ends the listing with one
line; members over the image size cap are counted, never read; a binary `.txt` is `caption_not_text`; a key of
Unicode digits is counted; a tar named twice, or lying in the output folder, is refused; an HTTP tar or table that
stalls or is cut is retried as the storage layer's reads are, then one line naming the URL."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
import time
from pathlib import Path

import pytest

from shardgen.errors import BadImage, UserError
from shardgen.format import storage
from shardgen.format.storage import RefusedFile
from shardgen.format.tar import iter_tar_samples
from shardgen.format.errors import SchemaError
from shardgen.sharding.images import read_image_bytes
from shardgen.sources import roots, webdataset
from shardgen.sources.roots import TarMember, read_member
from shardgen.sources.table import load_table
from shardgen.sources.webdataset import check_output_apart, load_webdataset

from ...bounded import within


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _claim(path: Path, member: int, size: int) -> Path:
    """Rewrite the size field of the `member`-th header of the tar at `path` to GNU base-256 `size` (checksum
    fixed), as a crafted tar would."""
    data = bytearray(path.read_bytes())
    pos = 0
    for _ in range(member):
        pos += 512 + (int(data[pos + 124:pos + 135], 8) + 511) // 512 * 512
    data[pos + 124:pos + 136] = b"\x80" + size.to_bytes(11, "big")
    data[pos + 148:pos + 156] = b" " * 8
    data[pos + 148:pos + 156] = f"{sum(data[pos:pos + 512]):06o}\0 ".encode()
    path.write_bytes(bytes(data))
    return path


def test_a_member_claiming_10_15_bytes_ends_the_listing_with_one_line(tmp_path):
    path = _claim(_tar(tmp_path / "00000.tar", [("000000001.txt", b"a dog"), ("000000001.jpg", b"x" * 340_000),
                                                ("000000002.txt", b"a cat")]), 1, 10**15)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"00000.tar: not a readable tar \(it ends at byte \d+ inside "
                                        r"'000000001.jpg', which claims 1000000000000000 bytes\)"):
        within(20, load_webdataset, str(path))
    assert time.monotonic() - started < 10
    with pytest.raises(SchemaError, match="claims 1000000000000000 bytes"):  # the format's own reader too
        within(20, lambda: list(iter_tar_samples(io.BytesIO(path.read_bytes()), source="s")))


def test_members_over_the_image_cap_are_counted_and_never_read(tmp_path, monkeypatch):
    monkeypatch.setattr(webdataset, "IMAGE_MAX_BYTES", 1000)
    path = _tar(tmp_path / "00000.tar", [("000000001.jpg", b"x" * 5000), ("000000001.txt", b"big image"),
                                         ("000000002.jpg", b"y" * 100), ("000000002.txt", b"z" * 5000),
                                         ("000000003.jpg", b"y" * 100), ("000000003.txt", b"fine")])
    got = load_webdataset(str(path))
    assert [(r.image_id, r.captions) for r in got.records] == [(3, ("fine",))]
    assert got.report.problems["too_large"] == ["000000001.jpg", "000000002.jpg"]
    huge = TarMember(str(path), 512, 10**15)  # what a lying index or a crafted header would ask for
    with pytest.raises(RefusedFile, match="1000000000000000 bytes, more than the"):
        read_member(huge)
    with pytest.raises(BadImage) as exc:
        read_image_bytes(huge)
    assert exc.value.reason == "too_large"


def test_a_binary_txt_is_caption_not_text_and_unicode_digit_keys_are_counted(tmp_path):
    path = _tar(tmp_path / "00000.tar", [
        ("000000001.jpg", b"x"), ("000000001.txt", b"\xff\xfe\x00\x01binary"),
        ("000000002.jpg", b"x"), ("000000002.txt", "a caption\x1b[2J".encode()),
        ("000000003.jpg", b"x"), ("000000003.txt", "une légende\tavec tab\n".encode()),
        ("00000\u00b2.jpg", b"x"), ("00000\u00b2.txt", b"superscript two"),
    ])
    got = load_webdataset(str(path))
    assert [(r.image_id, r.captions) for r in got.records] == [(3, ("une légende avec tab",))]
    assert got.report.problems["caption_not_text"] == ["000000001.jpg", "000000002.jpg"]
    assert got.report.problems["bad_image_id"] == ["00000\u00b2.jpg"]
    assert got.source["ids"] == "sample keys"  # one bad key does not turn every id into a listing rank


def test_a_tar_named_twice_is_refused(tmp_path):
    _tar(tmp_path / "00000.tar", [("000000001.jpg", b"x"), ("000000001.txt", b"a dog")])
    _tar(tmp_path / "00001.tar", [("000000002.jpg", b"x"), ("000000002.txt", b"a cat")])
    for urls in [f"{tmp_path}/{{00000..00001}}.tar {tmp_path}/00001.tar",
                 f"{tmp_path}/00000.tar {tmp_path}/./00000.tar"]:
        with pytest.raises(UserError, match=r"--webdataset names .*0000[01].tar twice"):
            load_webdataset(urls)
    assert len(load_webdataset(f"{tmp_path}/{{00000..00001}}.tar").records) == 2


def test_an_input_tar_inside_the_output_folder_is_refused_before_anything_is_touched(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    _tar(data / "train-000000.tar", [("000000001.jpg", b"x"), ("000000001.txt", b"a dog")])
    before = sorted(p.name for p in data.iterdir())
    for out in [data, tmp_path / "d" / ".", str(data) + "/", tmp_path / "link"]:
        if out == tmp_path / "link":
            out.symlink_to(data)
        with pytest.raises(UserError, match=r"--webdataset .*train-000000.tar lies in the output folder"):
            check_output_apart(str(data / "train-{000000..000000}.tar"), out)
    assert sorted(p.name for p in data.iterdir()) == before
    check_output_apart(str(data / "train-000000.tar"), tmp_path / "elsewhere")
    check_output_apart(str(data / "train-000000.tar"), tmp_path / "d-out")  # a sibling whose name starts alike
    with pytest.raises(UserError, match="lies in the output folder"):
        check_output_apart("s3://b/d/train-000000.tar", "s3://b/d/")
    check_output_apart("s3://b/d/train-000000.tar", "s3://b/d2")


class _Faulty:
    """An HTTP server whose body stops after `cut` bytes: `stall` keeps the connection open and silent (a frozen
    server), else it is closed (a cut). The first `faults` requests fail; later ones get the whole body."""

    def __init__(self, body: bytes, *, stall: bool, faults: int) -> None:
        self.body, self.stall, self.faults, self.requests = body, stall, faults, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n\r\n".encode()
            if request.startswith(b"HEAD"):  # fsspec's size probe
                conn.sendall(head)
                conn.close()
                continue
            self.requests += 1
            if self.requests > self.faults:
                conn.sendall(head + self.body)
                conn.close()
            elif self.stall:
                conn.sendall(head + self.body[:len(self.body) // 2])  # then nothing, connection held open
            else:
                conn.sendall(head + self.body[:len(self.body) // 2])
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(storage, "READ_TIMEOUT_S", 1.0)
    monkeypatch.setattr(roots, "RETRY_BACKOFF_S", 0.0)


@pytest.mark.parametrize("stall", [pytest.param(True, marks=pytest.mark.slow), False], ids=["stall", "cut"])
@pytest.mark.parametrize("kind", ["tar", "table"])
def test_an_http_input_that_stalls_or_is_cut_is_retried_then_one_line_naming_it(tmp_path, quick, kind, stall):
    if kind == "tar":
        body = _tar(tmp_path / "s.tar", [(f"{i:09d}.{ext}", b"x" * 3000) for i in range(4) for ext in ("jpg", "txt")])
        body = body.read_bytes()
        read = lambda url: load_webdataset(url)  # noqa: E731
    else:
        body = "".join(f'{{"image": "{i}.jpg", "caption": "caption {i}"}}\n' for i in range(2000)).encode()
        read = lambda url: load_table(url, tmp_path, None)  # noqa: E731
    name = "s.tar" if kind == "tar" else "t.jsonl"
    server = _Faulty(body, stall=stall, faults=1)  # once: the retry reads it all
    try:
        assert len(within(30, read, f"{server.url}/{name}").records) == (4 if kind == "tar" else 2000)
        assert server.requests == 2
    finally:
        server.close()
    server = _Faulty(body, stall=stall, faults=99)  # every time: one line after the storage layer's tries
    try:
        with pytest.raises(UserError, match=rf"^{server.url}/{name}: cannot read \((Connection|Timeout)Error: "
                                            rf"{server.url}/{name}: .*\(tried 3 times\)$"):
            within(30, read, f"{server.url}/{name}")
        assert server.requests == 3
    finally:
        server.close()
