"""Image preprocessing for shards: any readable image → RGB, CLIP 224 geometry, baseline JPEG bytes.

The CLIP pipeline is "resize the shorter side to 224 with antialiasing, center-crop 224×224". We let libjpeg
decode at a reduced scale first (PIL draft mode: DCT scaling to the smallest size still ≥ the target), which
makes decoding a 640×480 JPEG ~3× cheaper; the antialiased resize that follows does the rest. Failures raise
`BadImage(reason)`; the build counts them, it never crashes on a bad file.

What a header claims is checked before anything is decoded: more pixels than the build's limit is `too_large`,
and a JPEG too short to hold the blocks its header claims is `corrupt_image` (libjpeg would otherwise fill the
missing part with grey and PIL would not say so). Only raster formats PIL decodes itself are opened (no EPS, which
would run Ghostscript). Files are read through `format.read_local`: a FIFO, a device or a directory in place of an
image is `unreadable_file`, a link leading out of the image folder `unsafe_file_name`, a file over
`IMAGE_MAX_BYTES` `too_large`, each counted before a byte is read.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import (  # noqa: F401 - registers the formats in FORMATS before any open()
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from ..errors import BadImage, UserError
from ..format.errors import SchemaError
from ..format.redact import printable_name, redact
from ..format.storage import (
    IMAGE_MAX_BYTES,
    READ_TRIES,
    RETRY_BACKOFF_S,
    RefusedFile,
    client_errors,
)
from ..sources.roots import image_reader

_REFUSED = {"not_a_file": "unreadable_file", "outside_root": "unsafe_file_name", "too_large": "too_large"}

IMAGE_READ_RETRIES = READ_TRIES  # tries of a remote image read that failed for network reasons (the storage
                                 # layer's), before the build stops; RETRY_BACKOFF_S before the second, doubled

# Raster formats decoded in-process (JPEG includes camera MPO files); any other kind is counted as corrupt_image.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
_HUFFMAN_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive (what libjpeg decodes)


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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def min_jpeg_bytes(data: bytes) -> int:
    """The fewest bytes a Huffman-coded JPEG with this header can have: every 8×8 block of every component costs
    at least one bit (its DC code). 0 when the header is not one we can bound (arithmetic coding, unparsed)."""
    i = 2  # after SOI
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _HUFFMAN_SOF:
            frame = data[i + 4:i + 2 + length]  # precision, height, width, n, then (id, h<<4|v, table) per component
            if len(frame) < 6 or len(frame) < 6 + 3 * frame[5]:
                return 0
            height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
            factors = [(frame[j + 1] >> 4, frame[j + 1] & 15) for j in range(6, 6 + 3 * frame[5], 3)]
            if not factors or min(min(f) for f in factors) < 1:
                return 0
            h_max, v_max = max(h for h, _ in factors), max(v for _, v in factors)
            blocks = sum(_ceil_div(_ceil_div(width * h, h_max), 8) * _ceil_div(_ceil_div(height * v, v_max), 8)
                         for h, v in factors)
            return _ceil_div(blocks, 8)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) or marker == 0xDA:
            return 0  # another frame type (arithmetic, lossless), or scan data before any frame header
        i += 2 + length
    return 0


def _check_claims(img: Image.Image, data: bytes, *, max_pixels: int, path: str | Path) -> None:
    """Refuse, before decoding, an image whose header claims too many pixels or more than its bytes can hold."""
    w, h = img.size
    if w * h > max_pixels:
        raise BadImage("too_large", f"{path}: {w}×{h} is {w * h / 1e6:.1f} Mpx, over the {max_pixels / 1e6:g} Mpx "
                                    "limit (--max-image-pixels)")
    if img.format in ("JPEG", "MPO") and len(data) < min_jpeg_bytes(data):
        raise BadImage("corrupt_image", f"{path}: header claims {w}×{h} but {len(data)} bytes cannot hold that "
                                        "many pixels (truncated or crafted)")


def read_image_bytes(path: str | Path, *, root: str | Path | None = None, sleep=None) -> bytes:
    """The one place the build reads an image file: a local path through the format layer's one opener of
    user-named files (`read_local`: a regular file inside `root`, at most `IMAGE_MAX_BYTES`; a refusal is counted
    by reason), a URL (`s3://`, `https://`) through fsspec with the storage layer's timeouts and the same size
    cap, retried `IMAGE_READ_RETRIES` times with backoff on network errors. A file that is not there is
    `BadImage("missing_file")` (counted, the build goes on); a network that stays down raises (the build stops
    and resumes from its journal when rerun)."""
    local, read = image_reader(path, root=root, max_bytes=IMAGE_MAX_BYTES)
    if local:  # no retry: a file that cannot be read now will not be read in a second
        try:
            return read()
        except FileNotFoundError:
            raise BadImage("missing_file", str(path)) from None
        except RefusedFile as exc:
            raise BadImage(_REFUSED[exc.reason], str(exc)) from None
        except OSError as exc:
            raise BadImage("unreadable_file", f"{path}: {exc}") from exc
    sleep = sleep or time.sleep
    attempt = 0
    while True:
        try:
            return read()
        except FileNotFoundError:
            raise BadImage("missing_file", str(path)) from None
        except RefusedFile as exc:  # a tar member over the size cap, or its tar replaced by a FIFO
            raise BadImage(_REFUSED[exc.reason], str(exc)) from None
        except SchemaError as exc:  # more than IMAGE_MAX_BYTES came from a URL
            raise BadImage("too_large", str(exc)) from None
        except client_errors() as exc:
            attempt += 1
            if attempt == IMAGE_READ_RETRIES:  # the server or network is down: the build stops, in one line
                detail = printable_name(redact(f"{type(exc).__name__}: {exc}".splitlines()[0]))
                raise UserError(f"{printable_name(redact(str(path)))}: unreadable after {attempt} tries ({detail}); "
                                "the finished shards are journaled: rerun the same command to resume") from exc
            sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))


def preprocess_image(path: str | Path, *, size: int, crop: bool, quality: int, draft: bool,
                     max_pixels: int, root: str | Path | None = None) -> ImageResult:
    """Read `path` (a regular file, inside `root` when given), fix mode/orientation, resize/crop, and encode a
    baseline JPEG. Raises `BadImage`."""
    notes: list[str] = []
    data = read_image_bytes(path, root=root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_claims(img, data, max_pixels=max_pixels, path=path)
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
    except Image.DecompressionBombError as exc:  # PIL's own hard cap, above any sensible --max-image-pixels
        raise BadImage("too_large", f"{path}: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage("corrupt_image", f"{path}: {exc}") from exc
    return ImageResult(jpeg=out.getvalue(), width=img.size[0], height=img.size[1],
                       orig_width=orig_w, orig_height=orig_h, conversions=tuple(notes))
