import json
import shutil

import pytest

from shardgen.coco import clean_caption, load_split
from shardgen.errors import UserError
from shardgen.format.layout import find_split


@pytest.mark.parametrize("nesting", ["", "coco2014/", "kaggle/coco2014/images/"])
def test_find_split_any_nesting(tmp_path, nesting):
    images = tmp_path / nesting / "train2014"
    images.mkdir(parents=True)
    ann_dir = tmp_path / ("kaggle/coco2014/" if nesting.startswith("kaggle") else nesting) / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / "captions_train2014.json").write_text('{"images": [], "annotations": []}')
    layout = find_split(tmp_path, "train")
    assert layout.images_dir == images
    assert layout.annotations == ann_dir / "captions_train2014.json"


def test_missing_annotations_is_a_user_error(tmp_path):
    (tmp_path / "train2014").mkdir()
    with pytest.raises(UserError, match="captions_train2014.json"):
        find_split(tmp_path, "train")


@pytest.mark.parametrize("content", ["{not json", '{"images": 3}', '[1, 2]'])
def test_malformed_annotations_is_a_user_error(tmp_path, content):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2014.json").write_text(content)
    with pytest.raises(UserError, match="captions_train2014.json"):
        load_split(find_split(tmp_path, "train"))


def test_captions_cleaned_and_images_without_captions_reported(tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "annotations").mkdir()
    data = {
        "images": [{"id": 2, "file_name": "b.jpg"}, {"id": 1, "file_name": "a.jpg"}, {"id": 3, "file_name": "c.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "  A cat\non a mat. \n"},
            {"id": 5, "image_id": 1, "caption": "Caf\u0065\u0301 sign"},  # decomposed é → NFC
            {"id": 11, "image_id": 2, "caption": "   "},
            {"id": 12, "image_id": 99, "caption": "orphan"},
            {"id": 13, "image_id": 3, "caption": "ok"},
        ],
    }
    (tmp_path / "annotations" / "captions_train2014.json").write_text(json.dumps(data))
    images, report = load_split(find_split(tmp_path, "train"))
    assert [im.image_id for im in images] == [1, 3]
    assert images[0].captions == ("Caf\u00e9 sign", "A cat on a mat.")  # ordered by annotation id
    assert report.problems["no_captions"] == ["b.jpg"]
    assert report.problems["empty_caption"] == ["b.jpg"]
    assert report.problems["caption_without_image"] == ["12"]


def test_clean_caption():
    assert clean_caption(" a\tb \r\n c ") == "a b c"


def test_kaggle_layout_from_sample(tmp_path, sample_coco):
    dest = tmp_path / "coco-2014-dataset-for-yolov3" / "coco2014"
    (dest / "images").mkdir(parents=True)
    shutil.copytree(sample_coco / "val2014", dest / "images" / "val2014")
    shutil.copytree(sample_coco / "annotations", dest / "annotations")
    images, _ = load_split(find_split(tmp_path, "val"))
    assert len(images) == 12 and all(im.path.is_file() for im in images)
