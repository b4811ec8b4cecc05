"""An image–caption table as input: `.jsonl`, `.csv` or `.parquet` (local or a URL), one row per caption, read into
the same sorted `CocoImage` list as `coco.load_split`.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import UserError
from ..format.names import is_split_name, parse_decimal
from ..format.storage import redact
from .coco import CaptionReport, CocoImage, clean_caption, is_text, printable, valid_id
from .inputs import InputSpec, Loaded
from .roots import as_root, check_root, read_input, relative_name, under

FORMATS = (".jsonl", ".csv", ".parquet")
MAX_LINE_BYTES = 1 << 20  # a JSONL row is a few hundred bytes; a longer line is refused before it is held whole


class TableInput(NamedTuple):
    """The table's images, what was skipped, and the manifest's record of where they came from."""

    records: list[CocoImage]
    report: CaptionReport
    source: dict[str, Any]


def table_format(path: str | Path) -> str:
    """The table's format from its extension; `UserError` for any other."""
    suffix = Path(str(path).split("?", 1)[0]).suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"--captions {redact(str(path))}: unknown extension {suffix or '(none)'!r}; "
                        f"expected {', '.join(FORMATS)}")
    return suffix


def _rows_jsonl(fh, name: str) -> tuple[list[str], Iterator[dict]]:
    rows = []
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
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return columns, iter(rows)


def _rows_csv(fh, name: str) -> tuple[list[str], Iterator[dict]]:
    """Rows of a CSV file; `strict`: a quote left open is an error naming the line its row starts on, where the
    csv module's default would swallow every row after it into one caption."""
    reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8-sig", newline=""), strict=True)
    start, rows = 1, []
    try:
        columns = list(reader.fieldnames or [])
        start = reader.line_num + 1
        for row in reader:
            rows.append(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(f"{name}: line {start}: not readable as CSV ({exc}; a quote left open?)") from None
    return columns, iter(rows)


def _rows_parquet(fh, name: str) -> tuple[list[str], Iterator[dict]]:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{name}: reading parquet needs pyarrow: pip install 'coco-clip-shards[ray]' (or pyarrow)") \
            from None

    try:
        table = pq.read_table(fh)
    except pyarrow.ArrowException as exc:
        raise UserError(f"{name}: not a readable parquet file ({exc})".splitlines()[0]) from None
    return list(table.column_names), iter(table.to_pylist())


def read_rows(path: str | Path, required: tuple[str, ...] = ("image", "caption")) -> tuple[list[str], list[dict]]:
    """(column names, rows as dicts) of a table file; `UserError` when it cannot be read or lacks a `required`
    column."""
    reader = {".jsonl": _rows_jsonl, ".csv": _rows_csv, ".parquet": _rows_parquet}[table_format(path)]
    name = redact(str(path))

    def parse(fh) -> tuple[list[str], list[dict]]:
        columns, rows = reader(fh, name)
        return columns, list(rows)

    try:
        columns, rows = read_input(path, "captions table", parse)
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}: not UTF-8 text ({exc})") from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise UserError(f"{name}: no {' or '.join(repr(c) for c in missing)} column (columns: "
                        f"{', '.join(map(str, columns[:10])) or 'none'}); the table needs "
                        f"{' and '.join(map(repr, required))} (others name them: --image-column, --caption-column)")
    return columns, rows


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


# long: one pass over the rows, each check a counted reason, as in coco._group_captions
def _group(rows: list[dict], *, columns: TableColumns, has_ids: bool, root: Path | str, name: str,
           report: CaptionReport) -> dict[str, tuple[int | None, list]]:
    """Image name (normalized) → (its id or None, its cleaned captions in row order); unusable rows counted by
    reason."""
    images: dict[str, tuple[int | None, list[str]]] = {}
    for row in rows:
        given = row.get(columns.image)
        image = relative_name(given, root)
        if image is None:
            report.problems["unsafe_file_name"].append(printable(str(given)[:200]))
            continue
        image_id_ = None
        if has_ids:
            image_id_ = image_id(row.get(columns.image_id))
            if image_id_ is None:
                report.problems["bad_image_id"].append(printable(f"{image} ({columns.image_id} "
                                                                 f"{row.get(columns.image_id)!r:.40})"))
                continue
        known = images.setdefault(image, (image_id_, []))
        if known[0] != image_id_:
            raise UserError(f"{name}: image {image!r} has two ids ({known[0]} and {image_id_}); one image, one id")
        caption = row.get(columns.caption)
        if not is_text(caption):
            report.problems["caption_not_text"].append(image)
        elif not (text := clean_caption(caption)):
            report.problems["empty_caption"].append(image)
        else:
            known[1].append(text)
    return images


class TableColumns(NamedTuple):
    """The table's column names for each role (`--image-column` and friends): the image's path, its caption, its
    id (optional) and its split tag (optional)."""

    image: str = "image"
    caption: str = "caption"
    image_id: str = "image_id"
    split: str = "split"


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
    columns, rows = read_rows(path, (cols.image, cols.caption))
    root = as_root(image_root)
    check_root(root, "--image-root")
    if split is not None:
        if cols.split not in columns:
            raise UserError(f"{name}: --split {split} needs a {cols.split!r} column (columns: "
                            f"{', '.join(map(str, columns[:10]))})")
        rows = [row for row in rows if str(row.get(cols.split)) == split]
    report = CaptionReport()
    has_ids = cols.image_id in columns
    images = _group(rows, columns=cols, has_ids=has_ids, root=root, name=name, report=report)
    ids = {image: (image_id_ if image_id_ is not None else rank)
           for rank, (image, (image_id_, _)) in enumerate(sorted(images.items()))}
    owners: dict[int, str] = {}
    for image, image_id_ in ids.items():
        if owners.setdefault(image_id_, image) != image:
            raise UserError(f"{name}: {cols.image_id} {image_id_} is given to {owners[image_id_]!r} and {image!r}; "
                            "every image needs its own id")
    records = []
    for image in sorted(images, key=ids.__getitem__):
        caps = tuple(images[image][1])
        if not caps:
            report.problems["no_captions"].append(image)
            continue
        records.append(CocoImage(image_id=ids[image], file_name=image, path=under(root, image), captions=caps))
    source = {"dataset": "table", "captions": Path(str(path).split("?", 1)[0]).name, "split": split,
              "rows": len(rows), "ids": f"{cols.image_id} column" if has_ids else "rank of the sorted paths"}
    if cols != TableColumns():  # recorded only when named (a default table's manifest is unchanged)
        source["columns"] = cols._asdict()
    return TableInput(records=records, report=report, source=source)


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
