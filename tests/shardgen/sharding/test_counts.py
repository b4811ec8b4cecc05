"""What a build skipped is counted by unit (issue 30): images and caption rows apart, in the manifest (`unit`) and
in the summary line; and a Flickr split file without its image folder names the option it needs."""

from __future__ import annotations

import json

from shardgen.cli.main import main

from ...helpers import one_line
from ..sources.test_table import write_table


def test_skipped_images_and_caption_rows_are_counted_apart(tmp_path, sample_coco, tiny_encoder, capsys):
    names = sorted(p.name for p in (sample_coco / "val2014").iterdir())[:4]
    rows = [{"image": f"val2014/{n}", "caption": f"photo {i}"} for i, n in enumerate(names)]
    rows += [{"image": f"val2014/{names[0]}", "caption": "   "}, {"image": f"val2014/{names[1]}", "caption": ""},
             {"image": "val2014/not-there.jpg", "caption": "a missing photo"}]
    table = write_table(rows, tmp_path / "t.csv")
    assert main(["build", "--captions", str(table), "--image-root", str(sample_coco), "--out", str(tmp_path / "o"),
                 "--text-encoder", str(tiny_encoder), "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "1 images skipped, 2 caption rows skipped" in out, out
    assert "skipped 2 caption rows (empty_caption)" in out and "skipped 1 images (missing_file)" in out
    failures = json.loads((tmp_path / "o" / "manifest.json").read_text())["failures"]
    assert failures["empty_caption"]["unit"] == "caption" and failures["missing_file"]["unit"] == "image"


def test_a_flickr_split_file_without_its_image_folder_asks_for_image_root(tmp_path, capsys):
    assert main(["build", "--karpathy", str(tmp_path / "dataset_flickr30k.json"), "--split", "test", "--out",
                 str(tmp_path / "o"), "--quiet"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--karpathy needs --image-root" in line and "--coco-root is needed" not in line, line
