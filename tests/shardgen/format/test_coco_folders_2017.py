"""COCO 2017: the sample in 2017's layout holds the 2014 sample's pictures under 2017's names, layout discovery
finds it at any nesting, `--split val2017` builds shards that say where they came from, and manifests without that
record (every 2014 build) still read and write as before."""

import json

import pytest

from shardgen.cli.main import main
from shardgen.sources.coco import load_split
from shardgen.errors import SchemaError, UserError
from shardgen.format import Manifest
from shardgen.format.coco_folders import describe_layout, find_split
from shardgen.sources.synthetic import make_sample

from ...helpers import read_all


@pytest.fixture(scope="module")
def coco2017(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("c17") / "coco2017", images=6, val_images=3, seed=0, year=2017)


def test_2017_sample_is_the_2014_sample_under_2017_names(coco2017, tmp_path):
    coco2014 = make_sample(tmp_path / "coco2014", images=6, val_images=3, seed=0)
    for split in ("train", "val"):
        new, _ = load_split(find_split(coco2017, f"{split}2017"))
        old, _ = load_split(find_split(coco2014, split))
        assert [r.file_name for r in new] == [f"{r.image_id:012d}.jpg" for r in old]
        assert [(r.image_id, r.captions) for r in new] == [(r.image_id, r.captions) for r in old]
        assert all(a.path.read_bytes() == b.path.read_bytes() for a, b in zip(new, old))
        assert all(r.path.parent.name == f"{split}2017" for r in new)
    assert sorted(p.name for p in (coco2017 / "annotations").iterdir()) == ["captions_train2017.json",
                                                                            "captions_val2017.json"]


@pytest.mark.parametrize("nesting", ["", "coco/", "kaggle/coco2017/images/"])
def test_find_2017_split_any_nesting_and_not_as_2014(tmp_path, nesting):
    images = tmp_path / nesting / "val2017"
    images.mkdir(parents=True)
    (images / "000000000001.jpg").write_bytes(b"")  # a file, not a folder to descend into
    ann_dir = tmp_path / nesting.split("/")[0] / "annotations" if nesting else tmp_path / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / "captions_val2017.json").write_text('{"images": [], "annotations": []}')
    layout = find_split(tmp_path, "val2017")
    assert (layout.images_dir, layout.annotations) == (images, ann_dir / "captions_val2017.json")
    with pytest.raises(UserError, match="captions_val2014.json"):
        find_split(tmp_path, "val")  # `val` stays COCO 2014
    with pytest.raises(UserError, match="unknown split 'val2016'"):
        find_split(tmp_path, "val2016")
    assert "val2017: 1 files in" in describe_layout(tmp_path)


def test_build_val2017_names_shards_and_records_the_source(coco2017, tiny_encoder, tmp_path, capsys):
    out = tmp_path / "val2017"
    assert main(["build", "--coco-root", str(coco2017.parent), "--split", "val2017", "--out", str(out),
                 "--text-encoder", str(tiny_encoder), "--workers", "1", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"] == "val2017" and [s["name"] for s in manifest["shards"]] == ["val2017-000000.tar"]
    assert manifest["source"] == {"dataset": "coco2017", "split": "val2017", "captions": "captions_val2017.json"}
    assert json.loads((out / "shardindex.json").read_text())["name"] == "coco2017-val2017"
    records, _ = load_split(find_split(coco2017, "val2017"))
    samples = read_all(out)
    assert [(s["meta"]["file_name"], s["meta"]["captions"]) for _, s in samples] == \
        [(r.file_name, list(r.captions)) for r in records]
    assert (out / "val2017_text_embeddings.pt").is_file()
    capsys.readouterr()
    assert main(["verify", str(out), "--quiet"]) == 0


def test_manifest_source_is_optional_and_checked(train_shards):
    data = json.loads((train_shards / "manifest.json").read_text())
    assert "source" not in data  # a COCO 2014 build: as before
    manifest = Manifest.from_dict(data)
    assert manifest.source is None and manifest.to_json() == (train_shards / "manifest.json").read_text()
    with_source = Manifest.from_dict({**data, "source": {"dataset": "coco2017"}})
    assert with_source.to_dict()["source"] == {"dataset": "coco2017"}
    with pytest.raises(SchemaError, match="source is a list"):
        Manifest.from_dict({**data, "source": ["coco2017"]})


def test_sample_cli_writes_2017_layout(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "s"), "--images", "1", "--val-images", "1", "--year", "2017",
                 "--workers", "1", "--quiet"]) == 0
    assert len(list((tmp_path / "s" / "train2017").glob("????????????.jpg"))) == 1
    assert main(["sample", str(tmp_path / "t"), "--images", "1", "--year", "2017", "--karpathy", "--quiet"]) == 2
    assert "--karpathy describes COCO 2014" in capsys.readouterr().err and not (tmp_path / "t").exists()


@pytest.mark.parametrize("second", ["train2017", "annotations/captions_train2017.json"])
def test_two_candidates_at_the_same_depth_are_refused_naming_both(coco2017, tmp_path, second):
    """A second, partial train2017/ (or captions file) beside the real one at the same depth was used silently
    (39 of 40 images then missing); which one is meant cannot be known."""
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(coco2017, root / "main")
    real, copy = root / "main" / second, root / "backup" / second  # both at the same depth
    copy.parent.mkdir(parents=True)
    if real.is_dir():
        copy.mkdir()
        shutil.copy(next(real.iterdir()), copy)  # partial
    else:
        shutil.copy(real, copy)
    with pytest.raises(UserError, match="same depth") as info:
        find_split(root, "train2017")
    assert str(real) in str(info.value) and str(copy) in str(info.value)
    shutil.rmtree(root / "backup")
    assert find_split(root, "train2017").images_dir == root / "main" / "train2017"
