"""`make_sample(coco_like=True)`: COCO's varied image sizes and unique captions, recorded truthfully."""

from __future__ import annotations

from PIL import Image

from shardgen.sources.coco import load_split
from shardgen.format.coco_folders import find_split
from shardgen.sources.synthetic import COCO_SIZES, _coco_like, make_sample


def test_coco_like_sample_sizes_and_captions(tmp_path):
    root = make_sample(tmp_path / "c", images=16, val_images=2, seed=1, coco_like=True)
    records, report = load_split(find_split(root, "train"))
    assert len(records) == 16 and not report.problems
    sizes = set()
    for rec in records:
        with Image.open(rec.path) as img:
            sizes.add(img.size)
    assert sizes <= set(COCO_SIZES) and len(sizes) > 1  # varied, as recorded
    captions = [c for rec in records for c in rec.captions]
    assert len(set(captions)) == len(captions)  # every caption unique, as in COCO


def test_coco_like_caption_counts_follow_coco():
    counts = [_coco_like(i)[1] for i in range(1, 10_001)]
    assert set(counts) <= {5, 6, 7}
    extra = sum(counts) - 5 * len(counts)
    assert 0.001 < extra / len(counts) < 0.006  # COCO 2014: 332 extra captions over 123,287 images
