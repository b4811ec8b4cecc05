"""The input listing in columns: what a build knows of its images without one Python object per image.

A source reads its input into a `Listing`: the images sorted by id, each field a column — `image_id` (int64), the
`file_name` and the `location` the image is read from (a path, a URL, or the tar holding it) as `Strings` (one
UTF-8 buffer and an int64 offset per text), a tar member's offset and size (int64, -1 for a file), and every
caption of every image in one `Strings`, image i's being `captions[first_caption[i]:first_caption[i + 1]]`. That is
~40 bytes per image beside its texts, where a record object held ~1 KB (docs/benchmarks.md, driver).

The driver plans, hashes and matches captions to the cache on the columns; a shard task receives its range as a
`Listing` of its own (`listing[first:end]`: a compact copy) and makes `ImageRecord` records of it where it reads
the images (`records()`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .record import ImageRecord
from .roots import image_location, stored_location

_CHUNK = 1 << 16  # texts joined per piece while building or reordering: the transient memory stays fixed


@dataclass(frozen=True)
class Strings:
    """Texts as one UTF-8 buffer: text i is `blob[offsets[i]:offsets[i + 1]]`."""

    blob: bytes | bytearray
    offsets: np.ndarray  # int64 [n + 1], offsets[0] == 0

    @classmethod
    def of(cls, texts: Iterable[str]) -> Strings:
        builder = StringsBuilder()
        for text in texts:
            builder.append(text)
        return builder.build()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].decode("utf-8", "surrogatepass")

    def __iter__(self) -> Iterator[str]:
        blob, ends = self.blob, self.offsets.tolist()
        return (blob[a:b].decode("utf-8", "surrogatepass") for a, b in zip(ends, ends[1:]))

    def slice(self, start: int, stop: int) -> Strings:
        """Texts start..stop-1 as their own (compact) `Strings`."""
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return Strings(self.blob[a:b], self.offsets[start:stop + 1] - a)

    def take(self, order: np.ndarray) -> Strings:
        """The texts in `order` (indices), copied once into a buffer of their size."""
        order = np.asarray(order, np.int64)
        lengths = (self.offsets[1:] - self.offsets[:-1])[order]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out, source = bytearray(int(offsets[-1])), memoryview(self.blob)
        for to, start, stop in zip(offsets.tolist(), self.offsets[order].tolist(), self.offsets[order + 1].tolist()):
            out[to:to + stop - start] = source[start:stop]
        return Strings(out, offsets)

    def digest(self, h) -> None:
        """Feed the texts, and where each ends, to the hash `h`."""
        h.update(self.offsets.astype("<i8").tobytes())
        h.update(self.blob)


class StringsBuilder:
    """`Strings` built one text at a time, in pieces of `_CHUNK` texts (no list of every text is kept)."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._lengths: list[np.ndarray] = []
        self._texts: list[bytes] = []

    def append(self, text: str) -> None:
        self._texts.append(text.encode("utf-8", "surrogatepass"))
        if len(self._texts) == _CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._texts:
            self._pieces.append(b"".join(self._texts))
            self._lengths.append(np.fromiter(map(len, self._texts), np.int64, len(self._texts)))
            self._texts = []

    def build(self) -> Strings:
        """The texts so far; the builder lets go of its pieces (it is empty after)."""
        self._flush()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        blob, self._pieces, self._lengths = b"".join(self._pieces), [], []
        return Strings(blob, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


@dataclass(frozen=True)
class Listing:
    """A build's images, sorted by id, in columns (see the module docstring)."""

    image_id: np.ndarray  # int64 [N]
    file_name: Strings  # [N]
    location: Strings | None  # [N]: a local path or a URL; a tar member's tar. None: each is `root`/`file_name`
    member: np.ndarray | None  # int64 [N, 2]: a tar member's (offset, size), (-1, -1) for a file; None: no member
    captions: Strings  # [C], image by image
    first_caption: np.ndarray  # int64 [N + 1]
    root: str | None = None  # the image folder or URL every file name is under, when `location` is None

    @classmethod
    def from_records(cls, records: Iterable[ImageRecord]) -> Listing:
        """The columns of records already sorted by id (the sources that read a few hundred thousand at most)."""
        ids, names, places, members, captions, counts = [], StringsBuilder(), StringsBuilder(), [], \
            StringsBuilder(), [0]
        any_member = False
        for rec in records:
            ids.append(rec.image_id)
            names.append(rec.file_name)
            place, member = stored_location(rec.path)
            any_member |= member is not None
            places.append(place)
            members.append(member or (-1, -1))
            for caption in rec.captions:
                captions.append(caption)
            counts.append(len(rec.captions))
        return cls(np.asarray(ids, np.int64), names.build(), places.build(),
                   np.asarray(members, np.int64).reshape(-1, 2) if any_member else None, captions.build(),
                   np.cumsum(counts, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.image_id)

    def __getitem__(self, index: slice | int) -> Listing | ImageRecord:
        """Image i as a record; images `start:stop` as a listing of their own (compact: what a shard task
        receives)."""
        if not isinstance(index, slice):
            return self.record(range(len(self))[index])
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("a listing slices in order only")
        stop = max(start, stop)
        c0, c1 = int(self.first_caption[start]), int(self.first_caption[stop])
        return Listing(self.image_id[start:stop].copy(), self.file_name.slice(start, stop),
                       None if self.location is None else self.location.slice(start, stop),
                       None if self.member is None else self.member[start:stop].copy(),
                       self.captions.slice(c0, c1), self.first_caption[start:stop + 1] - c0, self.root)

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    def record(self, i: int) -> ImageRecord:
        name = self.file_name[i]
        place = self.location[i] if self.location is not None else under_root(self.root, name)
        offset, size = (-1, -1) if self.member is None else (int(v) for v in self.member[i])
        path = image_location(place, (offset, size) if size >= 0 else None)
        caps = tuple(self.captions[c] for c in range(int(self.first_caption[i]), int(self.first_caption[i + 1])))
        return ImageRecord(int(self.image_id[i]), name, path, caps)

    def records(self) -> list[ImageRecord]:
        """Every image as a record (a shard task's range; a small input's checks)."""
        return [self.record(i) for i in range(len(self))]

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self.record(i) for i in range(len(self)))

    def image_of_caption(self, k: int) -> int:
        """The image whose caption `k` is (an index into the listing)."""
        return int(np.searchsorted(self.first_caption, k, side="right")) - 1

    def captions_digest(self) -> str:
        """sha256 of every caption in order and of how they split into images: the caption cache keys its rows'
        order by it (`text.cache`)."""
        h = hashlib.sha256()
        self.captions.digest(h)
        h.update(self.first_caption.astype("<i8").tobytes())
        return h.hexdigest()

    def digest(self, h) -> None:
        """Feed every column to the hash `h` (the build identity)."""
        h.update(self.image_id.astype("<i8").tobytes())
        for strings in (self.file_name, self.captions):
            strings.digest(h)
        if self.location is not None:
            self.location.digest(h)
        else:
            h.update(f"under {self.root}\n".encode("utf-8", "surrogatepass"))
        if self.member is not None:
            h.update(self.member.astype("<i8").tobytes())
        h.update(self.first_caption.astype("<i8").tobytes())


def under_root(root: str | None, name: str) -> str:
    """Where the image `name` (a name `roots.relative_name` gave) lies under `root`, as `str(roots.under(...))`
    spells it, without a `Path` per image."""
    if root is None:
        raise ValueError("a listing without locations needs its root")
    if "://" in root:
        return f"{root.rstrip('/')}/{name}"
    return name if root == "." else f"{root.rstrip('/')}/{name}"
