"""An image–caption table as input: `.jsonl`, `.csv` or `.parquet` (local or a URL), one row per caption, read into
the same sorted listing as every source (`listing.Listing`: columns, not an object per row; a table is how the
largest inputs come, CC3M to LAION).

Columns: `image` (a path relative to the image root, or an absolute one inside it) and `caption`, both required;
`image_id` (a whole number in 0..10^12, the sample key: `17`, or `17.0` as pandas writes a float column) and
`split` optional; other names for them are given as `load_table`'s `*_column` arguments. Paths are normalized
(`roots.relative_name`): `a.jpg`, `./a.jpg` and `a.jpg/` are one image. An image's rows are grouped, its captions in row order. Without an
`image_id` column the ids are the images' ranks in the sorted list of distinct paths, so the same rows give the
same ids and the same shards in any of the three formats. With `split`, `--split S` keeps the rows tagged S.

Rows are checked as `coco.py` checks annotations, and counted by reason rather than crashing a build: a path that
would leave the image root (`unsafe_file_name`), a missing or non-text caption (`caption_not_text`), a blank one
(`empty_caption`), an id that is not a whole number of ASCII digits (`bad_image_id`, with the id); a missing image
file is counted when the build reads it (`missing_file`). One image given two ids, or one id for two images, is a
`UserError`: which captions belong to which file cannot be known. A missing column, an unknown extension, an
unreadable file, a JSONL line over `MAX_LINE_BYTES` or a CSV quote left open is one line naming the file and line
(exit 2). A CSV may start with a UTF-8 byte order mark (Excel's "CSV UTF-8").
"""

from __future__ import annotations

import csv
import io
import json
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import UserError
from ..format.names import is_split_name, parse_decimal
from ..format.storage import redact
from .coco import CaptionReport, clean_caption, is_text, printable, valid_id
from .inputs import InputSpec, Loaded
from .listing import Listing, Strings, StringsBuilder
from .roots import as_root, check_root, read_input, relative_name

FORMATS = (".jsonl", ".csv", ".parquet")
MAX_LINE_BYTES = 1 << 20  # a JSONL row is a few hundred bytes; a longer line is refused before it is held whole


class TableInput(NamedTuple):
    """The table's images, what was skipped, and the manifest's record of where they came from."""

    records: Listing
    report: CaptionReport
    source: dict[str, Any]


def table_format(path: str | Path) -> str:
    """The table's format from its extension; `UserError` for any other."""
    suffix = Path(str(path).split("?", 1)[0]).suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"--captions {redact(str(path))}: unknown extension {suffix or '(none)'!r}; "
                        f"expected {', '.join(FORMATS)}")
    return suffix


def _rows_jsonl(fh, name: str) -> tuple[list[str] | None, Iterator[dict]]:
    """Rows of a JSONL file, one at a time; its columns are those its rows name (None: known once read)."""
    def rows() -> Iterator[dict]:
        number = 0
        while line := fh.readline(MAX_LINE_BYTES + 1):  # bounded: a 3 GiB line is never read whole
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise UserError(f"{name}: line {number} is longer than {MAX_LINE_BYTES} bytes; a table row is one "
                                "image and its caption")
            text = line.decode("utf-8")
            if not text.strip():
                continue
            try:
                row = json.loads(text.removeprefix("\ufeff") if number == 1 else text)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise UserError(f"{name}: line {number} is not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise UserError(f"{name}: line {number} is not a JSON object")
            yield row

    return None, rows()


def _rows_csv(fh, name: str) -> tuple[list[str] | None, Iterator[dict]]:
    """Rows of a CSV file, one at a time; `strict`: a quote left open is an error naming the line its row starts
    on, where the csv module's default would swallow every row after it into one caption."""
    reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8-sig", newline=""), strict=True)
    try:
        columns = list(reader.fieldnames or [])
    except csv.Error as exc:
        raise UserError(f"{name}: line 1: not readable as CSV ({exc}; a quote left open?)") from None

    def rows() -> Iterator[dict]:
        start = reader.line_num + 1
        try:
            for row in reader:
                yield row
                start = reader.line_num + 1
        except csv.Error as exc:
            raise UserError(f"{name}: line {start}: not readable as CSV ({exc}; a quote left open?)") from None

    return columns, rows()


def _rows_parquet(fh, name: str) -> tuple[list[str] | None, Iterator[dict]]:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{name}: reading parquet needs pyarrow: pip install 'coco-clip-shards[ray]' (or pyarrow)") \
            from None

    try:
        parquet = pq.ParquetFile(fh)
        columns = list(parquet.schema_arrow.names)
    except pyarrow.ArrowException as exc:
        raise UserError(f"{name}: not a readable parquet file ({exc})".splitlines()[0]) from None

    def rows() -> Iterator[dict]:  # a batch at a time: the file is never held whole as Python rows
        try:
            for batch in parquet.iter_batches(batch_size=1 << 16):
                yield from batch.to_pylist()
        except pyarrow.ArrowException as exc:
            raise UserError(f"{name}: not a readable parquet file ({exc})".splitlines()[0]) from None

    return columns, rows()


def _missing_columns(name: str, columns: list[str], required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise UserError(f"{name}: no {' or '.join(repr(c) for c in missing)} column (columns: "
                        f"{', '.join(map(str, columns[:10])) or 'none'}); the table needs "
                        f"{' and '.join(map(repr, required))} (others name them: --image-column, --caption-column)")


def read_table(path: str | Path, required: tuple[str, ...], consume: Callable[[Iterator[dict]], None]) -> list[str]:
    """The column names of a table file, its rows streamed to `consume` one at a time (a dict each); `UserError`
    when it cannot be read or lacks a `required` column."""
    reader = {".jsonl": _rows_jsonl, ".csv": _rows_csv, ".parquet": _rows_parquet}[table_format(path)]
    name = redact(str(path))

    def parse(fh) -> list[str]:
        columns, rows = reader(fh, name)
        if columns is not None:  # known before the rows: checked before any is read
            _missing_columns(name, columns, required)
            consume(rows)
            return columns
        seen: dict[str, None] = {}
        consume(_noting_keys(rows, seen))
        _missing_columns(name, list(seen), required)
        return list(seen)

    try:
        return read_input(path, "captions table", parse)
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}: not UTF-8 text ({exc})") from None


def _noting_keys(rows: Iterator[dict], seen: dict[str, None]) -> Iterator[dict]:
    for row in rows:
        if not row.keys() <= seen.keys():
            seen.update(dict.fromkeys(row))
        yield row


def image_id(value: object) -> int | None:
    """An `image_id` cell as an id, or None when it is not one: an int (JSON, parquet), a float that is a whole
    number (a pandas float64 column: `17.0`), or ASCII digits (CSV: `17`, `17.0`; never `²`, which
    `str.isdigit()` takes and `int()` refuses)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        whole, dot, fraction = value.strip().partition(".")
        value = parse_decimal(whole) if not dot or (fraction and not fraction.strip("0")) else None
    return value if valid_id(value) else None


class TableColumns(NamedTuple):
    """The table's column names for each role (`--image-column` and friends): the image's path, its caption, its
    id (optional) and its split tag (optional)."""

    image: str = "image"
    caption: str = "caption"
    image_id: str = "image_id"
    split: str = "split"


class _Images:
    """The table's images in columns while its rows stream past (no object per row or per image beyond its name):
    each row is checked as `coco.py` checks annotations, its caption kept in row order with its image's number.

    A JSONL table names its columns row by row, so whether it has ids is known at its end: a row without one is
    kept provisionally and, when another row had an id, counted `bad_image_id` then, in its place among the
    table's rows (as the same table in parquet, its cells null, counts it). A problem row is noted with where it
    stands: after `position` kept captions, the table's row `number`."""

    def __init__(self, cols: TableColumns, root: Path | str, name: str, split: str | None, report: CaptionReport):
        self.cols, self.root, self.name, self.split, self.report = cols, root, name, split, report
        self.index: dict[str, int] = {}  # image name → its number (first seen first)
        self.ids = array("q")  # per image: its id; -1 while no row gave one
        self.with_id = array("q")  # per image: its rows with an id (valid names and ids)
        self.without_id = array("q")  # per image: its rows without the id column
        self.row_image = array("q")  # per kept caption: its image's number
        self.row_has_id = array("b")
        self.captions = StringsBuilder()
        self.deferred: list[tuple[int, int, str, str]] = []  # (position, number, problem, image) of rows without
        #                                                        an id whose caption is no text (see the docstring)
        self.bad_ids: list[tuple[int, int, str]] = []  # (position, number, what is counted) of rows with a bad id
        self.rows = 0

    def add(self, row: dict) -> None:
        cols = self.cols
        if self.split is not None and ((tag := row.get(cols.split)) is None or str(tag) != self.split):
            return  # (a null tag is no split, not one named "None")
        self.rows += 1
        given = row.get(cols.image)
        image = relative_name(given, self.root)
        if image is None:
            self.report.problems["unsafe_file_name"].append(printable(str(given)[:200]))
            return
        has_id = cols.image_id in row
        id_ = image_id(row[cols.image_id]) if has_id else -1
        if id_ is None:
            self.bad_ids.append((len(self.row_image), self.rows, printable(f"{image} ({cols.image_id} "
                                                                           f"{row.get(cols.image_id)!r:.40})")))
            return
        i = self.index.setdefault(image, len(self.index))
        if i == len(self.ids):
            self.ids.append(id_)
            self.with_id.append(0)
            self.without_id.append(0)
        elif has_id and self.ids[i] == -1:  # its earlier rows had no id
            self.ids[i] = id_
        elif has_id and self.ids[i] != id_:
            raise UserError(f"{self.name}: image {image!r} has two ids ({self.ids[i]} and {id_}); one image, one id")
        if has_id:
            self.with_id[i] += 1
        else:
            self.without_id[i] += 1
        caption = row.get(cols.caption)
        problem = "caption_not_text" if not is_text(caption) else \
            "empty_caption" if not (text := clean_caption(caption)) else None
        if problem is not None and has_id:
            self.report.problems[problem].append(image)
        elif problem is not None:
            self.deferred.append((len(self.row_image), self.rows, problem, image))
        else:
            self.captions.append(text)
            self.row_image.append(i)
            self.row_has_id.append(has_id)

    def _count_rows_without_ids(self, names: np.ndarray, row_image: np.ndarray, has_ids: bool) -> None:
        """Count the problem rows, in table order: where the table has ids, a row without one is `bad_image_id`
        (merged by position with the rows whose id was bad); else a caption problem under its reason."""
        if not has_ids:  # (no row had the id column, so none had a bad id)
            for _, _, problem, image in self.deferred:
                self.report.problems[problem].append(image)
            return
        last = len(self.row_image) + self.rows + 1  # after every noted row at the same position
        counted = self.bad_ids + [(position, number, printable(f"{image} ({self.cols.image_id} None)"))
                                  for position, number, _, image in self.deferred]
        counted += [(int(k), last, printable(f"{names[row_image[k]]} ({self.cols.image_id} None)"))
                    for k in np.flatnonzero(np.frombuffer(self.row_has_id, np.int8) == 0)]
        if counted:
            self.report.problems["bad_image_id"].extend(text for *_, text in sorted(counted))

    def listing(self, has_ids: bool) -> Listing:
        """The images, sorted by id (with no id column: by their rank in the sorted list of names), each with its
        captions in row order; `UserError` when two images have one id."""
        names = np.array(list(self.index), dtype=object)
        self.index = {}
        row_image = np.frombuffer(self.row_image, np.int64)
        kept = np.flatnonzero(np.frombuffer(self.row_has_id, np.int8)) if has_ids else np.arange(len(row_image))
        self._count_rows_without_ids(names, row_image, has_ids)
        entered = np.frombuffer(self.with_id if has_ids else self.without_id, np.int64) > 0
        by_name = np.argsort(names, kind="stable")
        ids = np.frombuffer(self.ids, np.int64).copy()
        if not has_ids:
            ids[by_name] = np.arange(len(names))
        in_id_order = by_name[entered[by_name]]
        in_id_order = in_id_order[np.argsort(ids[in_id_order], kind="stable")]
        same = np.flatnonzero(ids[in_id_order][1:] == ids[in_id_order][:-1])
        if len(same):
            a, b = sorted((names[in_id_order[same[0]]], names[in_id_order[same[0] + 1]]))
            raise UserError(f"{self.name}: {self.cols.image_id} {ids[in_id_order[same[0]]]} is given to {a!r} and "
                            f"{b!r}; every image needs its own id")
        counts = np.bincount(row_image[kept], minlength=len(names))
        for i in in_id_order[counts[in_id_order] == 0]:
            self.report.problems["no_captions"].append(names[i])
        final = in_id_order[counts[in_id_order] > 0]
        place = np.empty(len(names), np.int64)
        place[final] = np.arange(len(final))
        kept = kept[np.argsort(place[row_image[kept]], kind="stable")]  # image by image, rows in table order
        captions = self.captions.build().take(kept)
        return Listing(ids[final], Strings.of(names[final]), None, None, captions,
                       np.concatenate([[0], np.cumsum(counts[final])]).astype(np.int64), str(self.root))


def load_table(path: str | Path, image_root: str | Path, split: str | None, *, image_column: str = "image",
               caption_column: str = "caption", id_column: str = "image_id", split_column: str = "split"
               ) -> TableInput:
    """Every image of the table (the rows whose `split_column` is `split`, when given) with its captions, sorted by
    id; each role read from the column the `*_column` arguments name."""
    name = redact(str(path))
    cols = TableColumns(image_column, caption_column, id_column, split_column)
    if len(set(cols)) < len(cols):
        raise UserError(f"--captions {name}: one column named for two roles ({', '.join(cols)}); give each role "
                        "its own column")
    root = as_root(image_root)
    check_root(root, "--image-root")
    report = CaptionReport()
    images = _Images(cols, root, name, split, report)

    def consume(rows: Iterator[dict]) -> None:
        for row in rows:
            images.add(row)

    columns = read_table(path, (cols.image, cols.caption), consume)
    if split is not None and cols.split not in columns:
        raise UserError(f"{name}: --split {split} needs a {cols.split!r} column (columns: "
                        f"{', '.join(map(str, columns[:10]))})")
    has_ids = cols.image_id in columns
    listing = images.listing(has_ids)
    source = {"dataset": "table", "captions": Path(str(path).split("?", 1)[0]).name, "split": split,
              "rows": images.rows, "ids": f"{cols.image_id} column" if has_ids else "rank of the sorted paths"}
    if cols != TableColumns():  # recorded only when named (a default table's manifest is unchanged)
        source["columns"] = cols._asdict()
    return TableInput(records=listing, report=report, source=source)


def _check(cfg) -> None:
    if cfg.split is not None and not is_split_name(cfg.split):
        raise ValueError(f"split must be letters, digits, _ or - to name shards, got {cfg.split!r}")


def _load(cfg) -> Loaded:
    table = load_table(cfg.captions, cfg.image_root, cfg.split, image_column=cfg.image_column,
                       caption_column=cfg.caption_column, id_column=cfg.id_column, split_column=cfg.split_column)
    return Loaded(table.records, table.report, table.source, cfg.captions, str(cfg.image_root), "table",
                  str(cfg.captions), [cfg.captions])


# `--captions FILE --image-root DIR [--split S]`: shards <S>-*.tar (all-*.tar without --split)
SPECS = [InputSpec("table", ("captions", "image_root"), _check, lambda cfg: cfg.split or "all", _load)]
