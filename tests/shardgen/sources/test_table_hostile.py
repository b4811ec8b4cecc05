"""Hostile input, round three (issue 29), the table and the path checks every source shares: spellings of one path
are one image; a name that decodes to `../` under a URL root, or an absolute path outside the root, is refused and
counted; a JSONL line is read no further than its cap; a CSV with a byte order mark reads, one with a quote left
open names its line; whole-number float ids are ids and other ids are named; Unicode digits are no id; the columns
can be named (issue 30); a FIFO given as an input file is one line, never a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shardgen.cli.main import main
from shardgen.errors import UserError
from shardgen.format.coco_folders import SplitLayout
from shardgen.sources import table
from shardgen.sources.coco import CaptionReport, load_split
from shardgen.sources.karpathy import load_flickr, load_karpathy
from shardgen.sources.roots import relative_name, under
from shardgen.sources.table import image_id, load_table
from shardgen.sources.webdataset import load_webdataset

from ...bounded import within
from ...helpers import one_line
from ...netutil import FileServer
from .test_table import write_table


def _captions(got) -> dict[str, tuple[str, ...]]:
    return {r.file_name: r.captions for r in got.records}


def test_spellings_of_one_path_are_one_image_not_several_samples(tmp_path):
    rows = [{"image": name, "caption": f"caption {i}"}
            for i, name in enumerate(["a.jpg", "./a.jpg", "a.jpg/", ".//a.jpg", "sub//b.jpg", "sub/./b.jpg/"])]
    got = load_table(write_table(rows, tmp_path / "t.jsonl"), tmp_path, None)
    assert _captions(got) == {"a.jpg": tuple(f"caption {i}" for i in range(4)),
                              "sub/b.jpg": ("caption 4", "caption 5")}
    assert [r.path for r in got.records] == [tmp_path / "a.jpg", tmp_path / "sub/b.jpg"]


@pytest.mark.parametrize("name", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:\\x.jpg", "..\\x.jpg", "a\x00.jpg",
                                  "\ud800.jpg", "", "./", " "])
def test_names_that_leave_the_root_are_refused_everywhere(tmp_path, name):
    assert relative_name(name, tmp_path / "root") is None
    assert relative_name(name, "https://host/images") is None


def test_percent_encoded_dot_dot_under_a_url_root_is_refused_and_counted(tmp_path):
    for name in ["%2e%2e/private/x.jpg", "%2E%2E%2Fprivate/x.jpg", "a/%2e%2e/%2e%2e/x.jpg", "%252e%252e/x.jpg"]:
        assert relative_name(name, "https://host/images") is None, name
    assert relative_name("%2e%2e/x.jpg", tmp_path) == "%2e%2e/x.jpg"  # a local folder may be named so
    with FileServer({"/images": b"", "/images/ok.jpg": b"x"}) as srv:
        rows = [{"image": "%2e%2e/private/x.jpg", "caption": "secret"}, {"image": "ok.jpg", "caption": "fine"}]
        got = load_table(write_table(rows, tmp_path / "t.csv"), f"{srv.url}/images", None)
    assert _captions(got) == {"ok.jpg": ("fine",)}
    assert got.report.problems["unsafe_file_name"] == ["%2e%2e/private/x.jpg"]


def test_absolute_paths_inside_the_image_root_are_made_relative_outside_refused(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(root)
    rows = [{"image": str(root / "sub" / "a.jpg"), "caption": "absolute"},
            {"image": "sub/a.jpg", "caption": "relative"},
            {"image": str(link / "b.jpg"), "caption": "through a link to the root"},
            {"image": str(tmp_path / "outside.jpg"), "caption": "outside"},
            {"image": str(root / ".." / "outside.jpg"), "caption": "dot-dot"},
            {"image": str(root), "caption": "the root itself"}]
    got = load_table(write_table(rows, tmp_path / "t.jsonl"), root, None)
    assert _captions(got) == {"sub/a.jpg": ("absolute", "relative"), "b.jpg": ("through a link to the root",)}
    assert len(got.report.problems["unsafe_file_name"]) == 3
    assert relative_name("https://host/images/a/b.jpg", "https://host/images") == "a/b.jpg"
    assert relative_name("https://other/images/a/b.jpg", "https://host/images") is None


def test_under_refuses_a_name_that_was_not_checked(tmp_path):
    assert under(tmp_path, "a/b.jpg") == tmp_path / "a/b.jpg"
    for name in ["../x.jpg", "./a.jpg", "/abs.jpg"]:
        with pytest.raises(ValueError, match="not a checked relative name"):
            under(tmp_path, name)


def test_coco_file_names_are_normalized_and_checked_by_the_same_rule(tmp_path):
    images = [{"id": 1, "file_name": "./a.jpg"}, {"id": 2, "file_name": str(tmp_path / "img" / "b.jpg")},
              {"id": 3, "file_name": str(tmp_path / "c.jpg")}]
    anns = [{"id": i, "image_id": i, "caption": f"c{i}"} for i in (1, 2, 3)]
    (tmp_path / "img").mkdir()
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns}))
    records, report = load_split(SplitLayout(split="val", images_dir=tmp_path / "img", annotations=tmp_path / "ann.json"))
    assert [(r.file_name, r.path) for r in records] == [("a.jpg", tmp_path / "img/a.jpg"),
                                                        ("b.jpg", tmp_path / "img/b.jpg")]
    assert report.problems["unsafe_file_name"] == [str(tmp_path / "c.jpg")]


def test_a_jsonl_line_longer_than_the_cap_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(table, "MAX_LINE_BYTES", 1000, raising=False)
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"image": "a.jpg", "caption": "x"}) + "\n"
                    + json.dumps({"image": "b.jpg", "caption": "y" * 5000}) + "\n")
    reads = []
    real_open = table.read_input

    def spy(path, what, parse, **kw):
        def counted(fh):
            real = fh.readline

            def readline(*args):
                line = real(*args)
                reads.append(len(line))
                return line
            fh.readline = readline
            return parse(fh)
        return real_open(path, what, counted, **kw)

    monkeypatch.setattr(table, "read_input", spy)
    with pytest.raises(UserError, match=r"t.jsonl: line 2 is longer than 1000 bytes"):
        load_table(path, tmp_path, None)
    assert max(reads) <= 1001  # the long line was not read whole


def test_a_csv_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfimage,caption\r\na.jpg,a dog\r\n")
    assert _captions(load_table(path, tmp_path, None)) == {"a.jpg": ("a dog",)}
    path = tmp_path / "excel.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"image": "a.jpg", "caption": "a cat"}).encode() + b"\n")
    assert _captions(load_table(path, tmp_path, None)) == {"a.jpg": ("a cat",)}


def test_a_csv_quote_left_open_is_an_error_naming_its_line_not_the_rest_swallowed(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text('image,caption\na.jpg,fine\nb.jpg,"never closed\nc.jpg,lost\nd.jpg,lost too\n')
    with pytest.raises(UserError, match=r"t.csv: line 3: not readable as CSV"):
        load_table(path, tmp_path, None)
    argv = ["build", "--captions", str(path), "--image-root", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 2 and "line 3" in one_line(capsys.readouterr().err)
    path.write_text('image,caption\na.jpg,"a caption\nover two lines"\nb.jpg,"quoted, with a comma"\n')
    assert _captions(load_table(path, tmp_path, None)) == {"a.jpg": ("a caption over two lines",),
                                                          "b.jpg": ("quoted, with a comma",)}


def test_whole_number_float_ids_are_ids_and_other_ids_are_named(tmp_path):
    rows = [{"image": "a.jpg", "caption": "x", "image_id": 1.0}, {"image": "b.jpg", "caption": "y", "image_id": 2.0},
            {"image": "c.jpg", "caption": "z", "image_id": 2.5}]
    for ext in (".parquet", ".jsonl", ".csv"):  # a pandas float64 column; CSV spells it "1.0"
        got = load_table(write_table(rows, tmp_path / f"t{ext}"), tmp_path, None)
        assert [(r.file_name, r.image_id) for r in got.records] == [("a.jpg", 1), ("b.jpg", 2)], ext
        assert got.report.problems["bad_image_id"] == ["c.jpg (image_id 2.5)" if ext != ".csv"
                                                       else "c.jpg (image_id '2.5')"]
    assert [image_id(v) for v in ["17", " 17 ", "17.0", "17.", "1e3", "-1", "0x11", True, 17.0, float("nan"), 1e13]] \
        == [17, 17, 17, None, None, None, None, None, 17, None, None]
    report = CaptionReport()
    report.problems["bad_image_id"] += ["c.jpg (image_id 2.5)", "d.jpg (image_id 'x')", "e.jpg (image_id '')"]
    assert report.summary() == "bad_image_id 3 (c.jpg (image_id 2.5), d.jpg (image_id 'x'), ...)"


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_unicode_digits_are_no_image_id_counted_not_a_traceback(tmp_path, ext):
    rows = [{"image": "a.jpg", "caption": "x", "image_id": "\u00b2"}, {"image": "b.jpg", "caption": "y", "image_id": "7"},
            {"image": "c.jpg", "caption": "z", "image_id": "\u0661\u0662"}]  # superscript two, Arabic-Indic 12
    got = load_table(write_table(rows, tmp_path / f"t{ext}"), tmp_path, None)
    assert [(r.file_name, r.image_id) for r in got.records] == [("b.jpg", 7)]
    assert len(got.report.problems["bad_image_id"]) == 2


def test_columns_can_be_named_for_each_role(tmp_path):
    rows = [{"filepath": "a.jpg", "title": "x", "key": 5, "fold": "test"},
            {"filepath": "b.jpg", "title": "y", "key": 6, "fold": "train"}]
    path = write_table(rows, tmp_path / "t.csv")
    got = load_table(path, tmp_path, "test", image_column="filepath", caption_column="title", id_column="key",
                     split_column="fold")
    assert [(r.file_name, r.image_id, r.captions) for r in got.records] == [("a.jpg", 5, ("x",))]
    assert got.source["ids"] == "key column"
    assert got.source["columns"] == {"image": "filepath", "caption": "title", "image_id": "key", "split": "fold"}
    assert "columns" not in load_table(write_table([{"image": "a.jpg", "caption": "x"}], tmp_path / "d.csv"), tmp_path,
                                       None).source
    with pytest.raises(UserError, match=r"no 'image' or 'caption' column .* needs 'image' and 'caption' \(others name them: --image-column"):
        load_table(path, tmp_path, None)
    with pytest.raises(UserError, match=r"needs 'filepath' and 'caption'"):
        load_table(path, tmp_path, None, image_column="filepath")
    with pytest.raises(UserError, match=r"--split test needs a 'split' column"):
        load_table(path, tmp_path, "test", image_column="filepath", caption_column="title")
    with pytest.raises(UserError, match="one column named for two roles"):
        load_table(path, tmp_path, None, image_column="title", caption_column="title")


def test_a_fifo_as_any_input_file_is_one_line_not_a_hang(tmp_path, capsys):
    readers = {
        "t.csv": lambda p: load_table(p, tmp_path, None),
        "dataset_coco.json": lambda p: load_karpathy(p, tmp_path, "test"),
        "dataset_flickr30k.json": lambda p: load_flickr(p, tmp_path, "test"),
        "00000.tar": lambda p: load_webdataset(str(p)),
        "captions_val2014.json": lambda p: load_split(SplitLayout(split="val", images_dir=tmp_path, annotations=p)),
    }
    for name, read in readers.items():
        os.mkfifo(tmp_path / name)
        with pytest.raises(UserError, match=r"is a FIFO, not a regular file"):
            within(10, read, tmp_path / name)
    argv = ["build", "--karpathy", str(tmp_path / "dataset_flickr30k.json"), "--image-root", str(tmp_path),
            "--split", "test", "--out", str(tmp_path / "o"), "--quiet"]
    assert within(10, main, argv) == 2
    assert "is a FIFO" in one_line(capsys.readouterr().err)


def test_an_input_file_over_its_cap_is_refused_local_before_reading_remote_once_past_it(tmp_path):
    from shardgen.sources.roots import open_input

    (tmp_path / "t.jsonl").write_bytes(b"x" * 100)
    with pytest.raises(UserError, match=r"captions table .*t.jsonl: 100 bytes, more than the 10 allowed"):
        open_input(tmp_path / "t.jsonl", "captions table", max_bytes=10)
    with FileServer({"/t.jsonl": b"x" * 100_000}, ranges=False) as srv:
        with open_input(f"{srv.url}/t.jsonl", "captions table", max_bytes=100_000) as fh:
            assert len(fh.read()) == 100_000
        with open_input(f"{srv.url}/t.jsonl", "captions table", max_bytes=1000) as fh, \
                pytest.raises(UserError, match=r"t.jsonl: captions table holds more than the 1000 bytes"):
            fh.read()


def test_rows_without_an_id_are_counted_in_row_order_as_a_parquet_with_nulls_counts_them(tmp_path):
    """A JSONL row that leaves out `image_id` is known to lack it only once the table is read; it is counted where
    it stands among the table's rows, so the manifest lists the same files as the same table in parquet (nulls)."""
    rows = [{"image": "a.jpg", "caption": "kept", "image_id": "1"}, {"image": "b.jpg", "caption": "no id"},
            {"image": "c.jpg", "caption": "bad id", "image_id": "x"}, {"image": "d.jpg", "caption": " "},
            {"image": "a.jpg", "caption": "no id either"}, {"image": "e\n\u202e.jpg", "caption": None},
            {"image": "f.jpg", "caption": "an id", "image_id": "2"}]
    jsonl = load_table(write_table(rows, tmp_path / "t.jsonl"), tmp_path, None)
    parquet = load_table(write_table([{"image_id": None, **row} for row in rows], tmp_path / "t.parquet"), tmp_path,
                         None)
    assert [name.split(" ")[0] for name in jsonl.report.problems["bad_image_id"]][:4] == \
        ["b.jpg", "c.jpg", "d.jpg", "a.jpg"]
    assert jsonl.report.problems["bad_image_id"][4].startswith("e\n\u202e.jpg")
    assert dict(jsonl.report.problems) == dict(parquet.report.problems)
    assert [(r.image_id, r.captions) for r in jsonl.records] == [(1, ("kept",)), (2, ("an id",))]


@pytest.mark.parametrize("ext", [".jsonl", ".parquet"])
def test_a_row_without_a_split_is_in_no_split_not_in_one_named_none(tmp_path, ext):
    rows = [{"image": "a.jpg", "caption": "tagged", "split": "train"}, {"image": "b.jpg", "caption": "untagged",
                                                                         "split": None}]
    got = load_table(write_table(rows, tmp_path / f"t{ext}"), tmp_path, "None")
    assert list(got.records) == [] and got.source["rows"] == 0
