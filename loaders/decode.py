"""JPEG bytes → uint8 HWC pixels written straight into a preallocated batch, with uint8-only cropping.

simplejpeg (libjpeg-turbo, releases the GIL, decodes into a caller's buffer) is used when installed; PIL is the
fallback. Both run in a thread pool inside each loader process: decoding is GIL-free C, so threads scale without
the pickling and process hand-off that DataLoader workers cost. Images larger than the output size (shards built
with `--no-crop`, or a smaller `image_size`) are center- or randomly cropped (+ optional flip) on uint8.
"""

from __future__ import annotations

import io

import numpy as np

try:
    import simplejpeg
except ImportError:  # optional extra `fast`
    simplejpeg = None

from PIL import Image


class DecodeError(ValueError):
    pass


def available_backends() -> list[str]:
    return (["simplejpeg"] if simplejpeg is not None else []) + ["pil"]


def _decode_full(data: bytes, backend: str) -> np.ndarray:
    if backend == "simplejpeg":
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def decode_into(data: bytes, out: np.ndarray, *, backend: str, crop_origin: tuple[float, float] = (0.5, 0.5),
                flip: bool = False, size_hint: tuple[int, int] | None = None) -> None:
    """Decode `data` into `out` ([S, S, 3] uint8 view). Crops when the image is larger than S×S.

    `crop_origin` in [0, 1]² places the crop window (0.5, 0.5 = center). `size_hint` = (h, w) from the sample's
    json saves parsing the JPEG header (simplejpeg still checks the buffer size). Raises DecodeError.
    """
    size_h, size_w = out.shape[:2]
    try:
        if backend == "simplejpeg" and not flip:
            h, w = size_hint if size_hint is not None else simplejpeg.decode_jpeg_header(data)[:2]
            if (h, w) == (size_h, size_w):
                simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)  # no copy: straight into the batch
                return
        pixels = _decode_full(data, backend)
    except (ValueError, OSError, SyntaxError) as exc:
        raise DecodeError(f"JPEG does not decode ({exc})") from exc
    h, w = pixels.shape[:2]
    if h < size_h or w < size_w:
        raise DecodeError(f"image {w}×{h} is smaller than the output size {size_w}×{size_h}")
    top = int(round((h - size_h) * crop_origin[0]))
    left = int(round((w - size_w) * crop_origin[1]))
    window = pixels[top:top + size_h, left:left + size_w]
    out[...] = window[:, ::-1] if flip else window
