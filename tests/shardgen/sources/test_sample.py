import hashlib
import json

from PIL import Image

from shardgen.sources.coco import load_split
from shardgen.format.coco_folders import find_split
from shardgen.sources.synthetic import make_sample


def test_sample_has_coco_layout_and_caption_counts(sample_coco):
    for split, n in (("train", 48), ("val", 12)):
        layout = find_split(sample_coco, split)
        images, report = load_split(layout)
        assert len(images) == n and not report.problems
        assert all(im.path.name == f"COCO_{split}2014_{im.image_id:012d}.jpg" and im.path.is_file() for im in images)
    images, _ = load_split(find_split(sample_coco, "train"))
    counts = {len(im.captions) for im in images}
    assert counts == {5, 6, 7}  # like real COCO: mostly 5, a few 6 and 7


def test_sample_images_look_like_photos_to_jpeg(sample_coco):
    files = sorted((sample_coco / "train2014").glob("*.jpg"))[:10]
    for f in files:
        with Image.open(f) as img:
            assert img.size == (640, 480) and img.format == "JPEG"
        assert 80_000 < f.stat().st_size < 300_000  # real COCO JPEGs are ~100-250 KB


def test_captions_describe_the_image(sample_coco):
    data = json.loads((sample_coco / "annotations" / "captions_train2014.json").read_text())
    first_image = data["images"][0]["id"]
    caps = [a["caption"].lower() for a in data["annotations"] if a["image_id"] == first_image]
    colours = {"red", "green", "blue", "yellow", "purple", "orange", "white", "black"}
    assert all(any(c in cap for c in colours) for cap in caps)


def test_sample_is_deterministic(tmp_path):
    a = make_sample(tmp_path / "a", images=3, val_images=1, seed=7)
    b = make_sample(tmp_path / "b", images=3, val_images=1, seed=7)

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(a) == digest(b)
    assert digest(a) != digest(make_sample(tmp_path / "c", images=3, val_images=1, seed=8))
