"""`models.evaluate --unseen` against hostile folders: a FIFO, a 0-byte file, a PNG header claiming 20000×20000, a
directory named .jpg and a link out of the folder are skipped and named in one line (never a hang or a
traceback); a folder with nothing usable is one UserError."""

from __future__ import annotations

import os
import struct
import zlib

import pytest
from PIL import Image

from models.errors import UserError
from models.runs.qualitative import load_unseen

from ..bounded import within


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_hostile_files_are_skipped_and_named(tmp_path, capsys):
    folder = tmp_path / "unseen"
    folder.mkdir()
    Image.new("RGB", (80, 60), (10, 120, 200)).save(folder / "good.jpg")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "huge.png").write_bytes(_png_claiming(20000, 20000))
    (folder / "dir.jpg").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.jpg")
    (folder / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    images = within(30, load_unseen, folder)
    assert [img.size for img in images] == [(80, 60)]
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("note: --unseen: skipped 5 file(s)")
    for name, why in [("fifo.jpg", "FIFO"), ("empty.jpg", "cannot identify"), ("huge.png", "400000000 pixels"),
                      ("dir.jpg", "directory"), ("link.jpg", "outside")]:
        assert f"{name} (" in err and why in err.split(f"{name} (")[1].split(")")[0], (name, err)


def test_a_folder_with_nothing_usable_is_one_user_error(tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="no image that decodes"):
        load_unseen(tmp_path)
