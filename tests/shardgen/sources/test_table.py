"""Issue 22's other inputs: an image-caption table (.jsonl, .csv, .parquet) and Karpathy's Flickr30k split file build
with exactly the images and captions their files hold; the same rows in any format give the same shard bytes; bad
rows are counted, never a crash; a bad table or option is one line (exit 2)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from shardgen.sharding.pipeline import BuildConfig, build_shards
from shardgen.cli.main import main
from shardgen.format.coco_folders import find_split
from shardgen.sources.coco import load_split
from shardgen.sources.table import load_table

from ..helpers import read_all


def write_table(rows: list[dict], path: Path) -> Path:
    """`rows` as a .jsonl, .csv or .parquet file (by `path`'s extension)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def val_rows(sample_coco) -> list[dict]:
    """The sample's 12 val images as a table: one row per caption, rows of an image apart, no image_id."""
    records, _ = load_split(find_split(sample_coco, "val"))
    rows = [{"image": f"val2014/{r.file_name}", "caption": c, "split": "test" if i % 3 == 0 else "train"}
            for i, r in enumerate(records) for c in r.captions]
    return rows[1::2] + rows[::2]  # interleaved: grouping must not depend on row adjacency


def _tars(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def _build(table: Path, root: Path, out: Path, encoder: Path, **kw) -> Path:
    build_shards(BuildConfig(coco_root=None, split=kw.pop("split", None), out=out, captions=table, image_root=root,
                             text_encoder=str(encoder), samples_per_shard=5, workers=1, progress=False, **kw))
    return out


@pytest.mark.slow
def test_the_same_rows_as_jsonl_csv_and_parquet_give_identical_shards_holding_exactly_the_rows(
        tmp_path, sample_coco, tiny_encoder, val_rows):
    outs = [_build(write_table(val_rows, tmp_path / f"t{ext}"), sample_coco, tmp_path / ext[1:], tiny_encoder)
            for ext in (".jsonl", ".csv", ".parquet")]
    assert _tars(outs[0]) == _tars(outs[1]) == _tars(outs[2]) and len(_tars(outs[0])) == 3  # 12 images by 5
    got = {s["meta"]["file_name"]: tuple(s["meta"]["captions"]) for _, s in read_all(outs[0])}
    want: dict[str, list[str]] = {}
    for row in val_rows:
        want.setdefault(row["image"], []).append(row["caption"].strip())
    assert got == {k: tuple(" ".join(c.split()) for c in v) for k, v in want.items()}
    keys = [k for k, _ in read_all(outs[0])]
    assert keys == [f"{i:012d}" for i in range(12)]  # ids: ranks of the sorted paths
    assert json.loads((outs[0] / "manifest.json").read_text())["split"] == "all"


def test_split_column_filters_and_image_ids_are_kept(tmp_path, sample_coco, val_rows):
    rows = [{**row, "image_id": 1000 + int(row["image"][-8:-4])} for row in val_rows]
    got = load_table(write_table(rows, tmp_path / "t.csv"), sample_coco, "test")
    assert len(got.records) == 4 and all(r.image_id >= 1000 for r in got.records)
    assert [r.image_id for r in got.records] == sorted(r.image_id for r in got.records)


def test_bad_rows_are_counted_by_reason_and_a_missing_image_when_read(tmp_path, sample_coco, tiny_encoder, val_rows):
    rows = val_rows[:10] + [{"image": "../escape.jpg", "caption": "out"}, {"image": "val2014/none.jpg",
                            "caption": "no file"}, {"image": val_rows[0]["image"], "caption": "   "}]
    out = _build(write_table(rows, tmp_path / "t.jsonl"), sample_coco, tmp_path / "o", tiny_encoder)
    failures = json.loads((out / "manifest.json").read_text())["failures"]
    assert failures["unsafe_file_name"]["files"] == ["../escape.jpg"]
    assert failures["empty_caption"]["count"] == 1 and failures["missing_file"]["count"] == 1


@pytest.mark.parametrize("name,content,needle", [
    ("t.tsv", "image\tcaption\n", "unknown extension '.tsv'"),
    ("t.csv", "image,text\na.jpg,x\n", "no 'caption' column"),
    ("t.jsonl", "{\"image\": \"a.jpg\"\n", "line 1 is not JSON"),
    ("t.parquet", "not parquet", "not a readable parquet file"),
])
def test_a_bad_table_is_one_line_exit_2(tmp_path, sample_coco, capsys, name, content, needle):
    (tmp_path / name).write_text(content)
    argv = ["build", "--captions", str(tmp_path / name), "--image-root", str(sample_coco), "--out",
            str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and needle in err, err


def test_options_that_do_not_go_together_are_one_line(tmp_path, sample_coco, capsys):
    base = ["build", "--out", str(tmp_path / "o"), "--quiet"]
    for extra, needle in [(["--captions", "t.csv"], "--captions needs --image-root"),
                          (["--split", "val"], "--coco-root is needed"),
                          (["--captions", str(write_table([{"image": "a.jpg", "caption": "x"}], tmp_path / "ok.csv")),
                            "--image-root", str(tmp_path / "nowhere")], "is not a directory"),
                          (["--coco-root", str(sample_coco), "--split", "val", "--ray-address", "x:1"],
                           "--ray-address needs --executor ray")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err


def flickr_file(sample_coco: Path, path: Path) -> Path:
    """A `dataset_flickr30k.json`-format file for the sample's val images (all in one folder, as Flickr30k's):
    the first 4 tagged test, the next 2 val, the rest train; `imgid` counts from 0 as in the real file."""
    records, _ = load_split(find_split(sample_coco, "val"))
    images = [{"filename": r.file_name, "imgid": i, "split": "test" if i < 4 else "val" if i < 6 else "train",
               "sentids": [], "sentences": [{"raw": c + " ", "tokens": c.lower().split()} for c in r.captions]}
              for i, r in enumerate(reversed(records))]
    path.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return path


def test_flickr30k_through_its_karpathy_file_builds_exactly_its_test_images_and_captions(
        tmp_path, sample_coco, tiny_encoder, capsys):
    split_file = flickr_file(sample_coco, tmp_path / "dataset_flickr30k.json")
    images = sample_coco / "val2014"
    argv = ["build", "--karpathy", str(split_file), "--image-root", str(images), "--split", "test", "--out",
            str(tmp_path / "o"), "--text-encoder", str(tiny_encoder), "--quiet", "--workers", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["split"] == "flickr30k_test" and manifest["source"]["dataset"] == "flickr30k"
    want = {e["filename"]: tuple(s["raw"].strip() for s in e["sentences"])
            for e in json.loads(split_file.read_text())["images"] if e["split"] == "test"}
    got = {s["meta"]["file_name"]: tuple(s["meta"]["captions"]) for _, s in read_all(tmp_path / "o")}
    assert got == want and [k for k, _ in read_all(tmp_path / "o")] == [f"{i:012d}" for i in range(4)]
    assert main(argv[:5] + ["--split", "restval", "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert "--split must be one of train, val, test" in capsys.readouterr().err
    assert main(["build", "--karpathy", str(split_file), "--coco-root", str(sample_coco), "--split", "test",
                 "--out", str(tmp_path / "q"), "--quiet"]) == 2  # a Flickr file given as COCO's: the fix is named
    assert "not a COCO split file" in capsys.readouterr().err
