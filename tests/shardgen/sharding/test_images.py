import io

import numpy as np
import pytest
from PIL import Image

from shardgen.config import BuildConfig
from shardgen.errors import BadImage
from shardgen.sharding.images import preprocess_image as _preprocess_image

_BUILD = BuildConfig(coco_root=".", split="train", out=".")  # the build's defaults


def preprocess_image(path, **overrides):
    options = {"size": _BUILD.image_size, "crop": _BUILD.crop, "quality": _BUILD.jpeg_quality, "draft": _BUILD.draft,
               "max_pixels": _BUILD.max_image_pixels}
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


def _claiming(width: int, height: int, **save) -> bytes:
    """A real 16×16 JPEG whose frame header claims width×height (libjpeg would fill the rest with grey)."""
    import struct

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG", quality=50, **save)
    data = bytearray(buf.getvalue())
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def test_header_over_the_pixel_limit_is_too_large_without_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded before the size check"))
    messages = []
    for side in (12000, 14000):  # under and over PIL's own hard cap (2 × 89.5 Mpx)
        p = tmp_path / f"bomb{side}.jpg"
        p.write_bytes(_claiming(side, side))
        assert p.stat().st_size < 1000
        with pytest.raises(BadImage) as err:
            preprocess_image(p)
        assert err.value.reason == "too_large"
        messages.append(str(err.value))
    assert "12000×12000 is 144.0 Mpx, over the 50 Mpx limit" in messages[0]


def test_pixel_limit_is_the_callers(tmp_path):
    p = tmp_path / "a.jpg"
    _photo().save(p)
    assert preprocess_image(p, max_pixels=640 * 480).width == 224
    with pytest.raises(BadImage) as err:
        preprocess_image(p, max_pixels=640 * 480 - 1)
    assert err.value.reason == "too_large"


def test_png_header_claiming_a_huge_image_is_too_large(tmp_path):
    import struct
    import zlib

    p = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(p)
    data = bytearray(p.read_bytes())
    struct.pack_into(">II", data, 16, 30000, 30000)  # IHDR width, height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    p.write_bytes(bytes(data))
    with pytest.raises(BadImage) as err:
        preprocess_image(p)
    assert err.value.reason == "too_large"


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_too_short_for_its_header_is_corrupt_not_grey(tmp_path, progressive):
    p = tmp_path / "a.jpg"
    p.write_bytes(_claiming(2000, 2000, progressive=progressive))  # 4 Mpx: under the limit, but ~700 bytes
    with pytest.raises(BadImage) as err:
        preprocess_image(p)
    assert err.value.reason == "corrupt_image" and "cannot hold" in str(err.value)


@pytest.mark.parametrize("kind", ["baseline", "progressive", "optimized", "gray", "444", "flat_q1"])
def test_real_jpegs_are_above_the_size_floor(tmp_path, kind):
    from shardgen.sharding.images import min_jpeg_bytes

    img = Image.new("RGB", (640, 480), (50, 60, 70)) if kind == "flat_q1" else _photo()
    options = {"baseline": {}, "progressive": {"progressive": True}, "optimized": {"optimize": True},
               "gray": {}, "444": {"subsampling": 0}, "flat_q1": {"quality": 1, "optimize": True}}[kind]
    buf = io.BytesIO()
    (img.convert("L") if kind == "gray" else img).save(buf, "JPEG", **options)
    data = buf.getvalue()
    assert 0 < min_jpeg_bytes(data) <= len(data)
    p = tmp_path / "a.jpg"
    p.write_bytes(data)
    assert preprocess_image(p).width == 224


def test_formats_that_would_run_programs_are_not_opened(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")  # EPS runs Ghostscript
    with pytest.raises(BadImage) as err:
        preprocess_image(p)
    assert err.value.reason == "corrupt_image"
