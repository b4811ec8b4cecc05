"""The build's image reads go through the format layer's one opener of user-named files: a FIFO, /dev/zero, a
directory named .jpg or a link leading out of the image folder in place of an image is skipped and counted by
reason, at once (never a hang, never bytes from outside the folder)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from shardgen.sharding.pack import image_folder, preprocess_records as _preprocess_chunk
from shardgen.config import BuildConfig
from shardgen.errors import BadImage
from shardgen.sources.record import ImageRecord

from ...bounded import within


def _record(images: Path, name: str, image_id: int) -> ImageRecord:
    return ImageRecord(image_id=image_id, file_name=name, path=images / name, captions=("c",))


def test_hostile_files_in_place_of_images_are_counted(tmp_path):
    images = tmp_path / "coco" / "val2014"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 10, 10)).save(images / "sub" / "good.jpg")
    Image.new("RGB", (64, 48), (10, 200, 10)).save(tmp_path / "outside.jpg")  # a real image, outside the root
    os.mkfifo(images / "fifo.jpg")
    (images / "zero.jpg").symlink_to("/dev/zero")
    (images / "dir.jpg").mkdir()
    (images / "escape.jpg").symlink_to(tmp_path / "outside.jpg")
    (images / "inside.jpg").symlink_to(images / "sub" / "good.jpg")  # a link inside the folder is fine
    names = ["sub/good.jpg", "fifo.jpg", "zero.jpg", "dir.jpg", "escape.jpg", "inside.jpg"]
    records = [_record(images, n, i) for i, n in enumerate(names)]
    assert image_folder(records[0]) == images
    cfg = BuildConfig(coco_root=tmp_path / "coco", split="val", out=tmp_path / "out", workers=1)
    results = within(30, _preprocess_chunk, records, cfg)
    reasons = {n: r.reason if isinstance(r, BadImage) else "ok" for n, r in zip(names, results)}
    assert reasons == {"sub/good.jpg": "ok", "fifo.jpg": "unreadable_file", "zero.jpg": "unsafe_file_name",
                       "dir.jpg": "unreadable_file", "escape.jpg": "unsafe_file_name", "inside.jpg": "ok"}
    assert "FIFO" in str(results[1]) and "outside" in str(results[4])
