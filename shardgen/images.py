"""Image preprocessing for shards: any readable image → RGB, CLIP 224 geometry, baseline JPEG bytes.

The CLIP pipeline is "resize the shorter side to 224 with antialiasing, center-crop 224×224". We let libjpeg
decode at a reduced scale first (PIL draft mode: DCT scaling to the smallest size still ≥ the target), which
makes decoding a 640×480 JPEG ~3× cheaper; the antialiased resize that follows does the rest. Failures raise
`BadImage(reason)`; the build counts them, it never crashes on a bad file.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from .errors import BadImage

Image.MAX_IMAGE_PIXELS = 200_000_000  # COCO is ≤ 640 px; refuse only absurd decompression bombs


@dataclass(frozen=True)
class ImageResult:
    jpeg: bytes
    width: int
    height: int
    orig_width: int
    orig_height: int
    conversions: tuple[str, ...]  # e.g. ("cmyk_to_rgb",): fixed, not skipped; counted in the manifest


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        notes.append("alpha_flattened")
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    notes.append({"L": "gray_to_rgb", "CMYK": "cmyk_to_rgb"}.get(img.mode, f"{img.mode.lower()}_to_rgb"))
    return img.convert("RGB")


def resize_and_crop(img: Image.Image, *, size: int, crop: bool) -> Image.Image:
    """Shorter side → size (bicubic, antialiased); then center crop size×size when `crop`."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BICUBIC, reducing_gap=None)
    if crop:
        left, top = (new_w - size) // 2, (new_h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def preprocess_image(path: str | Path, *, size: int, crop: bool, quality: int, draft: bool) -> ImageResult:
    """Read `path`, fix mode/orientation, resize/crop, and encode a baseline JPEG. Raises `BadImage`."""
    notes: list[str] = []
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BadImage("missing_file", str(path)) from None
    except OSError as exc:
        raise BadImage("unreadable_file", f"{path}: {exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            orig_w, orig_h = img.size
            if img.format != "JPEG":
                notes.append(f"{(img.format or 'unknown').lower()}_source")
            orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation tag
            if orientation in (5, 6, 7, 8):  # stored rotated by 90°: the upright image is h×w
                orig_w, orig_h = orig_h, orig_w
            if draft and img.format == "JPEG" and img.mode in ("RGB", "L", "YCbCr"):
                img.draft("RGB", (size, size))  # DCT-domain downscale; never below size on either side
            img.load()
            if orientation not in (1, None):
                img = ImageOps.exif_transpose(img)
                notes.append("exif_rotated")
            img = _to_rgb(img, notes)
            img = resize_and_crop(img, size=size, crop=crop)
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=quality, optimize=False, progressive=False)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage("corrupt_image", f"{path}: {exc}") from exc
    return ImageResult(jpeg=out.getvalue(), width=img.size[0], height=img.size[1],
                       orig_width=orig_w, orig_height=orig_h, conversions=tuple(notes))
