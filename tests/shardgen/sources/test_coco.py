import json
import shutil

import pytest

from shardgen.sources.coco import clean_caption, load_split
from shardgen.errors import UserError
from shardgen.format.coco_folders import find_split


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


def _write(tmp_path, images, annotations):
    (tmp_path / "train2014").mkdir(exist_ok=True)
    (tmp_path / "annotations").mkdir(exist_ok=True)
    (tmp_path / "annotations" / "captions_train2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations}))
    return find_split(tmp_path, "train")


@pytest.mark.parametrize("bad_id", ["abc", -5, 2**70, 1.5, True, None, [1]])
def test_bad_image_ids_are_counted_not_fatal(tmp_path, bad_id):
    layout = _write(tmp_path, [{"id": bad_id, "file_name": "bad.jpg"}, {"id": 1, "file_name": "a.jpg"}],
                    [{"id": 1, "image_id": 1, "caption": "fine"}, {"id": 2, "image_id": bad_id, "caption": "x"}])
    images, report = load_split(layout)
    assert [im.file_name for im in images] == ["a.jpg"]
    assert report.problems["bad_image_id"] == ["bad.jpg"]
    assert report.problems["malformed_annotation"] == ["2"]  # its caption points at an id that cannot be a key


@pytest.mark.parametrize("name", ["../a.jpg", "sub/../../a.jpg", "/etc/passwd", "..\\a.jpg", "C:\\a.jpg",
                                  "C:a.jpg", "\\\\server\\share\\a.jpg", "a\x00.jpg"])
def test_file_names_leaving_the_image_folder_are_refused(tmp_path, name):
    layout = _write(tmp_path, [{"id": 1, "file_name": name}, {"id": 2, "file_name": "ok.jpg"}],
                    [{"id": 1, "image_id": 1, "caption": "x"}, {"id": 2, "image_id": 2, "caption": "y"}])
    images, report = load_split(layout)
    assert [im.file_name for im in images] == ["ok.jpg"] and report.problems["unsafe_file_name"] == [name]
    assert all(im.path.resolve().is_relative_to(layout.images_dir.resolve()) for im in images)


@pytest.mark.parametrize("file_name", [None, 7, "", "   ", ["a.jpg"]])
def test_missing_file_names_are_counted(tmp_path, file_name):
    info = {"id": 1} if file_name is None else {"id": 1, "file_name": file_name}
    images, report = load_split(_write(tmp_path, [info], [{"id": 1, "image_id": 1, "caption": "x"}]))
    assert images == [] and report.problems["bad_file_name"] == ["image 1"]


def test_captions_that_are_not_text_are_counted_not_stringified(tmp_path):
    junk = [42, None, ["a", "list"], {"a": "dict"}, 1.5, False]
    anns = [{"id": 1, "image_id": 1, "caption": "a real caption"}]
    anns += [{"id": 10 + i, "image_id": 1, "caption": c} for i, c in enumerate(junk)]
    anns += [{"id": 30, "caption": "no image id"}, "not an object", {"id": 31, "image_id": 1}]
    images, report = load_split(_write(tmp_path, [{"id": 1, "file_name": "a.jpg"}], anns))
    assert images[0].captions == ("a real caption",)
    assert report.problems["caption_not_text"] == ["a.jpg"] * (len(junk) + 1)  # + the one without a caption
    assert len(report.problems["malformed_annotation"]) == 2


def test_two_images_with_one_id_are_refused(tmp_path):
    layout = _write(tmp_path, [{"id": 3, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}], [])
    with pytest.raises(UserError, match=r"image id 3 is given twice \(a.jpg and b.jpg\)"):
        load_split(layout)


def test_deeply_nested_annotations_are_a_user_error(tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2014.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(UserError, match="captions_train2014.json"):
        load_split(find_split(tmp_path, "train"))


def _annotations(tmp_path, images, annotations):
    (tmp_path / "train2014").mkdir(exist_ok=True)
    (tmp_path / "annotations").mkdir(exist_ok=True)
    path = tmp_path / "annotations" / "captions_train2014.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))  # ensure_ascii: \ud800 escapes
    return find_split(tmp_path, "train")


def test_lone_surrogates_in_captions_and_file_names_are_skipped_and_counted(tmp_path):
    """JSON's \\ud800 escape decodes to a lone surrogate, which crashed the tokenizer or the journal after every
    caption was encoded; such a caption or file name is skipped and counted, in a form any file can hold."""
    layout = _annotations(tmp_path, [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b\udc00.jpg"}],
                          [{"id": 10, "image_id": 1, "caption": "a dog \ud800"},
                           {"id": 11, "image_id": 1, "caption": "a dog"},
                           {"id": 12, "image_id": 2, "caption": "a cat"}])
    records, report = load_split(layout)
    assert [(r.file_name, r.captions) for r in records] == [("a.jpg", ("a dog",))]
    assert report.problems["caption_not_text"] == ["a.jpg"]
    assert report.problems["unsafe_file_name"] == ["b\\udc00.jpg"]
    json.dumps(report.problems, ensure_ascii=False).encode("utf-8")  # writable as the manifest's failures


def test_integers_past_pythons_digit_limit_are_one_user_error(tmp_path):
    """json raises ValueError, not JSONDecodeError, for an integer over 4300 digits."""
    layout = _annotations(tmp_path, [], [])
    layout.annotations.write_text('{"images": [{"id": ' + "9" * 5000 + '}], "annotations": []}')
    with pytest.raises(UserError, match="cannot read annotations .*ValueError.*digits"):
        load_split(layout)
