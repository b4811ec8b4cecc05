"""JPEG bytes → uint8 HWC pixels written straight into a preallocated batch, with uint8-only cropping.

simplejpeg (libjpeg-turbo, releases the GIL, decodes into a caller's buffer) is used when installed; PIL is the
fallback. Both run in a thread pool inside each loader process: decoding is GIL-free C, so threads scale without
the pickling and process hand-off that DataLoader workers cost. Images larger than the output size (shards built
with `--no-crop`, or a smaller `image_size`) are cropped to the window `augment.window` places (+ optional flip),
on uint8.
"""

from __future__ import annotations

import io

import numpy as np

try:
    import simplejpeg
except ImportError:  # optional extra `fast`
    simplejpeg = None

from PIL import Image

from .augment import window
from .errors import DecodeError


def available_backends() -> list[str]:
    return (["simplejpeg"] if simplejpeg is not None else []) + ["pil"]


def _decode_full(data: bytes, backend: str) -> np.ndarray:
    if backend == "simplejpeg":
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


MAX_PIXELS_FACTOR = 64  # an image may hold at most 64× the output's pixels (224 px: 3.2 Mpx; COCO: ≤ 0.4 Mpx),
MIN_PIXEL_BUDGET = 224 * 224  # counted as at least 224×224: a small output size must not make 224-px shards "bad"


def _check_size(data, backend: str, out_pixels: int) -> None:
    """Refuse, from the header alone, an image that would decode to absurdly many pixels (a crafted header
    claiming 20000×20000 would otherwise cost 1.2 GB before any check)."""
    if backend == "simplejpeg":
        h, w = simplejpeg.decode_jpeg_header(data)[:2]
    else:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    if h * w > MAX_PIXELS_FACTOR * max(out_pixels, MIN_PIXEL_BUDGET):
        raise ValueError(f"image claims {w}×{h} pixels, over {MAX_PIXELS_FACTOR}× the output size")


def decode_into(data, out: np.ndarray, *, backend: str, crop_origin: tuple[float, float] = (0.5, 0.5),
                flip: bool = False) -> None:
    """Decode `data` (bytes-like) into `out` ([S, S, 3] C-contiguous uint8 view). Crops when the image is larger
    than S×S.

    `crop_origin` in [0, 1]² places the crop window (0.5, 0.5 = center). An image of exactly the output size
    (the usual case: shards store 224×224) is decoded straight into `out`, without a copy or a header parse.
    Raises DecodeError.
    """
    size_h, size_w = out.shape[:2]
    try:
        if backend == "simplejpeg" and not flip:
            try:
                if simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out).shape == out.shape:
                    return
            except ValueError:
                pass  # larger than `out` (cropped below) or corrupt (fails again below, with the reason)
        _check_size(data, backend, size_h * size_w)
        pixels = _decode_full(data, backend)
    except (ValueError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"JPEG does not decode ({exc})") from exc
    top, left = window(*pixels.shape[:2], size_h, size_w, crop_origin)  # the device decoder's window too
    cropped = pixels[top:top + size_h, left:left + size_w]
    out[...] = cropped[:, ::-1] if flip else cropped
