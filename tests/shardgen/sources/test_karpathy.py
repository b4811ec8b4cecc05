"""Karpathy splits: a `dataset_coco.json`-format file written from the sample selects the right images from the 2014
folders with the file's captions, `--karpathy FILE --split test` builds shards recording the file's sha256, a file
that is not a split file is one line (exit 2), and paths that would leave the image folders are never opened."""

import copy
import hashlib
import json

import pytest

from shardgen.cli.main import main
from shardgen.sources.coco import clean_caption, load_split
from shardgen.errors import UserError
from shardgen.format.coco_folders import find_split
from shardgen.sources.karpathy import load_karpathy, write_karpathy_file

from ...helpers import read_all


@pytest.fixture(scope="module")
def split_file(sample_coco, tmp_path_factory):
    """The sample's 48 train2014 images tagged train; of its 12 val2014 images 3 val, 3 test, 6 restval."""
    return write_karpathy_file(sample_coco, tmp_path_factory.mktemp("karpathy") / "dataset_coco.json", val=3, test=3)


def _entries(path):
    return json.loads(path.read_text())["images"]


def test_split_file_has_karpathys_fields(split_file):
    entries = _entries(split_file)
    assert {e["split"] for e in entries} == {"train", "restval", "val", "test"}
    e = next(e for e in entries if e["split"] == "test")
    assert set(e) >= {"split", "cocoid", "filepath", "filename", "sentences"} and e["filepath"] == "val2014"
    assert all(set(s) >= {"raw", "tokens"} for s in e["sentences"])


@pytest.mark.parametrize("split,want", [("train", 48), ("restval", 6), ("train+restval", 54), ("val", 3),
                                        ("test", 3)])
def test_splits_select_their_images_with_the_files_captions(split_file, sample_coco, split, want):
    got = load_karpathy(split_file, sample_coco, split)
    assert len(got.records) == want and not got.report.problems
    ids = [r.image_id for r in got.records]
    assert ids == sorted(ids)  # shards keep keys in order
    coco = {r.image_id: r for s in ("train", "val") for r in load_split(find_split(sample_coco, s))[0]}
    tags = {e["cocoid"]: e["split"] for e in _entries(split_file)}
    for rec in got.records:
        assert tags[rec.image_id] in split.split("+")
        assert rec.path == coco[rec.image_id].path and rec.path.is_file()
        assert rec.captions == coco[rec.image_id].captions  # the file's raw sentences, cleaned like COCO's
    assert got.source["split_file_sha256"] == hashlib.sha256(split_file.read_bytes()).hexdigest()
    assert got.source["tags"] == {"restval": 6, "test": 3, "train": 48, "val": 3}


def test_captions_come_from_the_split_file(split_file, sample_coco, tmp_path):
    entries = _entries(split_file)
    test = next(e for e in entries if e["split"] == "test")
    test["sentences"] = [{"raw": "  A Karpathy caption\n"}, {"raw": 7}, {"raw": "   "}]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps({"images": entries}))
    rec = next(r for r in load_karpathy(path, sample_coco, "test").records if r.image_id == test["cocoid"])
    assert rec.captions == (clean_caption("  A Karpathy caption\n"),)
    report = load_karpathy(path, sample_coco, "test").report.problems
    assert report["caption_not_text"] == [test["filename"]] and report["empty_caption"] == [test["filename"]]


def test_build_karpathy_test_split(split_file, sample_coco, tiny_encoder, tmp_path, capsys):
    out = tmp_path / "karpathy_test"
    assert main(["build", "--coco-root", str(sample_coco), "--karpathy", str(split_file), "--split", "test",
                 "--out", str(out), "--text-encoder", str(tiny_encoder), "--workers", "1", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"] == "karpathy_test"
    assert [s["name"] for s in manifest["shards"]] == ["karpathy_test-000000.tar"]
    assert manifest["source"]["split_file"] == "dataset_coco.json" and manifest["source"]["split"] == "test"
    assert manifest["source"]["split_file_sha256"] == hashlib.sha256(split_file.read_bytes()).hexdigest()
    want = load_karpathy(split_file, sample_coco, "test").records
    assert [(s["meta"]["image_id"], s["meta"]["captions"]) for _, s in read_all(out)] == \
        [(r.image_id, list(r.captions)) for r in want]
    capsys.readouterr()
    assert main(["verify", str(out), "--quiet"]) == 0


def _bad(entries, i, **fields):
    entries = copy.deepcopy(entries)
    entries[i].update(fields)
    return {"images": entries}


@pytest.mark.parametrize("content,message", [
    ("{not json", "cannot read the Karpathy split file"),
    ('{"images": 3}', "needs an 'images' list"),
    ('[1, 2]', "needs an 'images' list"),
    ('{"images": [3]}', r"images\[0\] is not an object"),
    (lambda e: _bad(e, 0, split="holdout"), r"images\[0\]: split 'holdout' is not one of"),
    (lambda e: _bad(e, 1, cocoid="139"), r"images\[1\]: cocoid '139' is not a COCO image id"),
    (lambda e: _bad(e, 2, cocoid=True), r"images\[2\]: cocoid True"),
    (lambda e: _bad(e, 3, cocoid=e[4]["cocoid"]), r"images\[4\]: cocoid \d+ is also images\[3\]"),
    (lambda e: _bad(e, 5, sentences="a cat"), r"images\[5\]: sentences is missing or not a list"),
    (lambda e: _bad(e, 6, filepath=None), r"images\[6\]: filepath is missing"),
])
def test_a_file_that_is_not_a_split_file_is_a_user_error(split_file, sample_coco, tmp_path, content, message):
    path = tmp_path / "dataset_coco.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content(_entries(split_file))))
    with pytest.raises(UserError, match=message):
        load_karpathy(path, sample_coco, "test")


def test_malformed_file_and_misused_split_are_one_line_exit_2(split_file, sample_coco, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"split": "test"}]}')
    base = ["build", "--coco-root", str(sample_coco), "--out", str(tmp_path / "o")]
    for args, message in ((["--karpathy", str(bad), "--split", "test"], "cocoid None is not a COCO image id"),
                          (["--split", "test"], "--split 'test' is one of Karpathy's splits"),
                          (["--karpathy", str(split_file), "--split", "val2017"], "--split must be one of train")):
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err and message in err, err
    assert not (tmp_path / "o").exists()


def test_paths_leaving_the_image_folders_are_skipped_and_counted(split_file, sample_coco, tmp_path):
    entries = _entries(split_file)
    tests = [i for i, e in enumerate(entries) if e["split"] == "test"]
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not yours")
    hostile = [{"filepath": "../val2014"}, {"filepath": str(tmp_path)}, {"filename": "../../secret.jpg"},
               {"filename": str(secret)}, {"filename": "C:\\secret.jpg"}, {"filepath": "val2014/.."}]
    for k, fields in enumerate(hostile):
        extra = copy.deepcopy(entries[tests[k % len(tests)]])
        extra.update(fields, cocoid=900_000 + k)
        entries.append(extra)
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps({"images": entries}))
    got = load_karpathy(path, sample_coco, "test")
    assert [r.image_id for r in got.records] == [entries[i]["cocoid"] for i in sorted(tests,
                                                                                      key=lambda i: entries[i]["cocoid"])]
    assert len(got.report.problems["bad_filepath"]) == 3 and len(got.report.problems["unsafe_file_name"]) == 3
    assert all(r.path.is_relative_to(sample_coco / "val2014") for r in got.records)


def test_surrogates_and_huge_integers_in_a_split_file(split_file, sample_coco, tmp_path):
    entries = _entries(split_file)
    test = next(i for i, e in enumerate(entries) if e["split"] == "test")
    entries[test]["sentences"][0]["raw"] = "a dog \ud800"
    path = tmp_path / "surrogate.json"
    path.write_text(json.dumps({"images": entries}))
    got = load_karpathy(path, sample_coco, "test")
    assert got.report.problems["caption_not_text"] == [entries[test]["filename"]]
    path.write_text('{"images": [{"cocoid": ' + "1" * 5000 + "}]}")
    with pytest.raises(UserError, match="cannot read the Karpathy split file .ValueError"):
        load_karpathy(path, sample_coco, "test")
