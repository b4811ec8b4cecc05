"""JPEG bytes → uint8 HWC pixels written straight into a preallocated batch, with uint8-only cropping.

simplejpeg (libjpeg-turbo, releases the GIL, decodes into a caller's buffer) is used when installed; PIL is the
fallback. Both run in a thread pool inside each loader process: decoding is GIL-free C, so threads scale without
the pickling and process hand-off that DataLoader workers cost. Images larger than the output size (shards built
with `--no-crop`, or a smaller `image_size`) are cropped, flipped and otherwise augmented as the batch's `Augment`
says (`loaders.shape.augment`), on uint8.
"""

from __future__ import annotations

import io

import numpy as np

try:
    import simplejpeg
except ImportError:  # optional extra `fast`
    simplejpeg = None

from PIL import Image

from .augment import Augment, center
from ..errors import DecodeError


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


def decode_into(data, out: np.ndarray, *, backend: str, augment: Augment | None = None, index: int = 0) -> None:
    """Decode `data` (bytes-like) into `out` (`[S, S, 3]` C-contiguous uint8 view) as image `index` of a batch
    whose `augment` (`loaders.shape.augment`) says how; without one, center-cropped to S×S.

    An image of exactly the output size that the augment keeps as stored (the usual case: shards store 224×224,
    no flip) is decoded straight into `out`, without a copy or a header parse. Raises DecodeError.
    """
    if augment is None:
        augment = center(out.shape[0], index + 1)
    try:
        if backend == "simplejpeg" and augment.keeps(index):
            try:
                if simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out).shape == out.shape:
                    return
            except ValueError:
                pass  # larger than `out` (cropped below) or corrupt (fails again below, with the reason)
        _check_size(data, backend, out.shape[0] * out.shape[1])
        pixels = _decode_full(data, backend)
    except (ValueError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"JPEG does not decode ({exc})") from exc
    out[...] = augment.array(pixels, index)  # what the device decoder gives for the same augment
