import io

import numpy as np
import pytest
from PIL import Image

from shardgen.config import BuildConfig
from shardgen.errors import BadImage
from shardgen.images import preprocess_image as _preprocess_image

_BUILD = BuildConfig(coco_root=".", split="train", out=".")  # the build's defaults


def preprocess_image(path, **overrides):
    options = dict(size=_BUILD.image_size, crop=_BUILD.crop, quality=_BUILD.jpeg_quality, draft=_BUILD.draft,
                   max_pixels=_BUILD.max_image_pixels)
    return _preprocess_image(path, **{**options, **overrides})


def _photo(w=640, h=480, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(128, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
    arr[: h // 2, : w // 2] = (250, 10, 10)  # red top-left quadrant: orientation is checkable
    return Image.fromarray(arr)


def _decoded(result) -> Image.Image:
    img = Image.open(io.BytesIO(result.jpeg))
    img.load()
    return img


def test_clip_geometry_and_baseline_jpeg(tmp_path):
    p = tmp_path / "a.jpg"
    _photo().save(p, quality=90)
    r = preprocess_image(p)
    img = _decoded(r)
    assert img.size == (224, 224) and img.mode == "RGB" and img.format == "JPEG"
    assert not img.info.get("progressive") and not img.info.get("progression")
    assert (r.orig_width, r.orig_height, r.width, r.height) == (640, 480, 224, 224)
    assert r.conversions == ()


def test_no_crop_keeps_aspect(tmp_path):
    p = tmp_path / "a.jpg"
    _photo().save(p)
    img = _decoded(preprocess_image(p, size=128, crop=False))
    assert img.size == (171, 128)


def test_draft_decode_close_to_full_decode(tmp_path):
    p = tmp_path / "a.jpg"
    _photo().save(p, quality=95)
    fast = np.asarray(_decoded(preprocess_image(p, draft=True)), dtype=np.float32)
    full = np.asarray(_decoded(preprocess_image(p, draft=False)), dtype=np.float32)
    assert np.abs(fast - full).mean() < 6.0  # same picture; DCT scaling only changes fine detail


@pytest.mark.parametrize("mode,note", [("L", "gray_to_rgb"), ("CMYK", "cmyk_to_rgb")])
def test_grayscale_and_cmyk_become_rgb(tmp_path, mode, note):
    p = tmp_path / "a.jpg"
    _photo().convert(mode).save(p, format="JPEG")
    r = preprocess_image(p)
    assert _decoded(r).mode == "RGB" and note in r.conversions


def test_rgba_png_named_jpg_is_flattened_on_white(tmp_path):
    p = tmp_path / "a.jpg"
    rgba = Image.new("RGBA", (300, 300), (0, 0, 255, 0))  # fully transparent blue
    rgba.save(p, format="PNG")
    r = preprocess_image(p)
    assert "png_source" in r.conversions and "alpha_flattened" in r.conversions
    assert np.asarray(_decoded(r)).mean() > 240  # transparent → white, not blue or black


def test_exif_rotation_is_applied(tmp_path):
    p = tmp_path / "a.jpg"
    img = _photo(640, 480)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(p, exif=exif.tobytes(), quality=95)
    r = preprocess_image(p, crop=False)
    out = np.asarray(_decoded(r), dtype=np.float32)
    assert "exif_rotated" in r.conversions
    assert (r.orig_width, r.orig_height) == (480, 640) and out.shape[:2] == (299, 224)
    # the red quadrant (top-left when stored) is top-right once displayed upright
    assert out[:60, -60:, 0].mean() > 200 and out[:60, :60, 0].mean() < 200


def test_truncated_jpeg_is_corrupt(tmp_path):
    p = tmp_path / "a.jpg"
    _photo().save(p)
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(BadImage) as err:
        preprocess_image(p)
    assert err.value.reason == "corrupt_image"


def test_not_an_image_and_missing_file(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(b"<html>404</html>")
    with pytest.raises(BadImage) as err:
        preprocess_image(p)
    assert err.value.reason == "corrupt_image"
    with pytest.raises(BadImage) as err:
        preprocess_image(tmp_path / "nope.jpg")
    assert err.value.reason == "missing_file"
