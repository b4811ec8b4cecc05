"""Existing webdataset shards as input (img2dataset's output: `<key>.jpg` + `<key>.txt` [+ `<key>.json`] per sample,
local or at URLs), read into the same sorted `ImageRecord` list as `coco.load_split`, so a CC3M-style download is
re-sharded into our format with precomputed caption embeddings.

`--webdataset 'dir/{00000..00099}.tar'` (a brace pattern, as webdataset and img2dataset write them, or several
patterns separated by spaces) is listed once, each tar read front to back with the stdlib's streaming reader: a
sample's image is recorded by where it lies (`roots.TarMember`: the tar's URL, offset and size) and read in place
when the build preprocesses it, so nothing is extracted. The caption is the sample's `.txt` (img2dataset writes the
caption there and in `.json`'s `caption`). Sample keys that are all whole numbers (img2dataset's `000000123`) are
the image ids; otherwise the ids are the samples' ranks in listing order. A sample without an image
(`missing_file`) or a caption (`no_captions`, `empty_caption`), whose `.txt` is not text (`caption_not_text`: not
UTF-8, or control characters), whose image or caption member is larger than an image file may be (`too_large`,
never read), or whose key is digits only to Unicode (`00000²`: `bad_image_id`) is counted. A tar that cannot be
read (a member claiming more bytes than the stream holds included) is one line, as is a tar named twice and, through
`check_output_apart`, a tar inside the build's output folder.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import IO, Any, NamedTuple

from ..errors import UserError
from ..format.names import is_split_name, parse_decimal
from ..format.storage import IMAGE_MAX_BYTES, is_remote, redact
from .coco import CaptionReport, clean_caption, is_text, printable, valid_id
from .inputs import InputSpec, Loaded
from .record import ImageRecord
from .roots import TarMember, read_input

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class WebdatasetInput(NamedTuple):
    records: list[ImageRecord]
    report: CaptionReport
    source: dict[str, Any]


class _Sample(NamedTuple):
    url: str
    key: str
    image: TarMember | None
    image_name: str
    caption: str | None
    problem: str | None = None  # a reason the sample is counted and skipped (too_large, caption_not_text)


def expand(urls: str) -> list[str]:
    """The tar URLs a `--webdataset` value names: brace patterns expanded, in order. A tar named twice is refused:
    its samples would be packed twice."""
    from braceexpand import braceexpand

    found = [url for pattern in urls.split() for url in braceexpand(pattern)]
    if not found:
        raise UserError("--webdataset names no tar files")
    seen: set[str] = set()
    for url in found:
        same = url if is_remote(url) else os.path.realpath(url.removeprefix("file://"))
        if same in seen:
            raise UserError(f"--webdataset names {redact(url)} twice; its samples would be packed twice")
        seen.add(same)
    return found


def check_output_apart(urls: str, out: str | os.PathLike) -> None:
    """Refuse (`UserError`, before anything is touched) a build whose output folder `out` holds one of the input
    tars `urls` names (a re-shard in place: `--webdataset 'd/train-*.tar' --out d`): the build replaces the shards
    in its output folder, its own input among them."""
    out_text = str(out)
    remote = is_remote(out_text)
    base = out_text.rstrip("/") + "/" if remote else os.path.join(os.path.realpath(out_text), "")
    for url in expand(urls):
        if is_remote(url) != remote:
            continue
        where = url if remote else os.path.realpath(url.removeprefix("file://"))
        if where.startswith(base):
            raise UserError(f"--webdataset {redact(url)} lies in the output folder {redact(out_text)}: the build "
                            "would replace its own input; give --out another folder")


def caption_text(data: bytes) -> str | None:
    """A `.txt` member as a caption, or None when it is not text: not UTF-8, or holding control characters
    (binary), as every other input counts it (`coco.is_text`)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if is_text(text) else None


class _TarEnded(Exception):
    """The stream ended inside a member (raised by `_TarStream`)."""


class _TarStream(io.RawIOBase):
    """A tar's bytes for tarfile's streaming reader, which skips a member by reading up to its claimed end and,
    once the stream has ended, goes on asking: a header claiming 10^15 bytes (GNU base-256) is ~6·10^10 empty
    reads, a listing without end. A read after the end has been seen raises `_TarEnded` (a sound tar never asks:
    its end-of-archive marker, or a header read that meets the end, stops the reader first)."""

    def __init__(self, fh: IO[bytes]) -> None:
        super().__init__()
        self._fh, self.pos, self._ended = fh, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._ended:
            raise _TarEnded(self.pos)
        view = memoryview(buffer).cast("B")
        data = self._fh.read(len(view))
        view[:len(data)] = data
        self.pos += len(data)
        self._ended = not data
        return len(data)


# long: one member loop, each kind of member a branch (image, caption, too large, not text)
def _iter_samples(url: str) -> list[_Sample]:
    """One tar's samples in member order: key → image location and caption text. Members larger than an image
    file may be (`IMAGE_MAX_BYTES`) are not read: their sample is counted `too_large`."""
    name = redact(str(url))

    def parse(fh: IO[bytes]) -> dict[str, dict[str, Any]]:
        samples: dict[str, dict[str, Any]] = {}
        stream, member = _TarStream(fh), None
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base = member.name.rsplit("/", 1)[-1]
                    key, _, ext = base.partition(".")
                    entry = samples.setdefault(f"{member.name[:len(member.name) - len(base)]}{key}", {})
                    ext = ext.lower()
                    if ext in IMAGE_EXTENSIONS + ("txt",) and member.size > IMAGE_MAX_BYTES:
                        entry["problem"] = "too_large"
                    elif ext in IMAGE_EXTENSIONS and "image" not in entry:
                        entry["image"] = TarMember(str(url), member.offset_data, member.size)
                        entry["image_name"] = base
                    elif ext == "txt":
                        entry["caption"] = caption_text(tar.extractfile(member).read())
                        entry["text_member"] = True
        except _TarEnded:
            claim = f" inside {printable(member.name)[:200]!r}, which claims {member.size} bytes" if member else ""
            raise UserError(f"{name}: not a readable tar (it ends at byte {stream.pos}{claim})") from None
        except tarfile.TarError as exc:
            raise UserError(f"{name}: not a readable tar ({exc})") from None
        return samples

    samples = read_input(url, "webdataset shard", parse, max_bytes=None)
    return [_Sample(url, key, e.get("image"), e.get("image_name", f"{key}.jpg"), e.get("caption"),
                    e.get("problem") or ("caption_not_text" if e.get("text_member") and e.get("caption") is None
                                         else None))
            for key, e in samples.items()]


def load_webdataset(urls: str) -> WebdatasetInput:
    """Every sample of the shards `urls` names with an image and a caption, sorted by id."""
    tars = expand(urls)
    samples = [s for url in tars for s in _iter_samples(url)]
    report = CaptionReport()
    for sample in samples:  # `00000²`: digits to `str.isdigit()`, no id to `int()`: counted, not a traceback
        if sample.key.isdigit() and parse_decimal(sample.key) is None:
            report.problems["bad_image_id"].append(printable(sample.image_name))
    samples = [s for s in samples if not (s.key.isdigit() and parse_decimal(s.key) is None)]
    numeric = [parse_decimal(s.key) for s in samples]
    by_key = all(valid_id(n) for n in numeric) and len(set(numeric)) == len(numeric)
    records = []
    for rank, sample in enumerate(samples):
        caption = clean_caption(sample.caption) if sample.caption is not None else None
        if sample.problem is not None:
            report.problems[sample.problem].append(printable(sample.image_name))
        elif sample.image is None:
            report.problems["missing_file"].append(printable(sample.image_name))
        elif caption is None:
            report.problems["no_captions"].append(printable(sample.image_name))
        elif not caption:
            report.problems["empty_caption"].append(printable(sample.image_name))
        else:
            records.append(ImageRecord(image_id=numeric[rank] if by_key else rank, file_name=sample.image_name,
                                     path=sample.image, captions=(caption,)))
    records.sort(key=lambda r: r.image_id)
    source = {"dataset": "webdataset", "shards": len(tars), "samples": len(samples),
              "first": redact(tars[0]).rsplit("/", 1)[-1], "ids": "sample keys" if by_key else "listing rank"}
    return WebdatasetInput(records=records, report=report, source=source)


def _check(cfg) -> None:
    if cfg.split is not None and not is_split_name(cfg.split):
        raise ValueError(f"split must be letters, digits, _ or - to name shards, got {cfg.split!r}")


def _load(cfg) -> Loaded:
    check_output_apart(cfg.webdataset, cfg.out)  # a re-shard in place would replace its own input
    wds = load_webdataset(cfg.webdataset)
    return Loaded(wds.records, wds.report, wds.source, cfg.webdataset, cfg.webdataset, "webdataset", cfg.webdataset,
                  [], tar_list=sorted({str(r.path.url) for r in wds.records}))


# `--webdataset URLS [--split S]`: shards <S>-*.tar (all-*.tar without --split)
SPECS = [InputSpec("webdataset", ("webdataset",), _check, lambda cfg: cfg.split or "all", _load)]
