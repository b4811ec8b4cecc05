"""An image–caption table as input: `.jsonl`, `.csv` or `.parquet` (local or a URL), one row per caption, read into
the same sorted `CocoImage` list as `coco.load_split`.

Columns: `image` (a path relative to the image root) and `caption`, both required; `image_id` (a whole number in
0..10^12, the sample key) and `split` optional. An image's rows are grouped, its captions in row order. Without an
`image_id` column the ids are the images' ranks in the sorted list of distinct paths, so the same rows give the
same ids and the same shards in any of the three formats. With `split`, `--split S` keeps the rows tagged S.

Rows are checked as `coco.py` checks annotations, and counted by reason rather than crashing a build: a path that
would leave the image root (`unsafe_file_name`), a missing or non-text caption (`caption_not_text`), a blank one
(`empty_caption`), an id that is not a whole number (`bad_image_id`); a missing image file is counted when the
build reads it (`missing_file`). One image given two ids, or one id for two images, is a `UserError`: which
captions belong to which file cannot be known. A missing column, an unknown extension or an unreadable file is one
line (exit 2).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import UserError
from ..format.storage import redact
from .coco import CaptionReport, CocoImage, clean_caption, safe_relative, valid_id
from .roots import as_root, check_root, open_input, under

FORMATS = (".jsonl", ".csv", ".parquet")
REQUIRED = ("image", "caption")


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
    lines = io.TextIOWrapper(fh, encoding="utf-8")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise UserError(f"{name}: line {number} is not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise UserError(f"{name}: line {number} is not a JSON object")
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return columns, iter(rows)


def _rows_csv(fh, name: str) -> tuple[list[str], Iterator[dict]]:
    reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8", newline=""))
    return list(reader.fieldnames or []), iter(list(reader))


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


def read_rows(path: str | Path) -> tuple[list[str], list[dict]]:
    """(column names, rows as dicts) of a table file; `UserError` when it cannot be read or lacks a column."""
    reader = {".jsonl": _rows_jsonl, ".csv": _rows_csv, ".parquet": _rows_parquet}[table_format(path)]
    name = redact(str(path))
    try:
        with open_input(path, "captions table") as fh:
            columns, rows = reader(fh, name)
            rows = list(rows)
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise UserError(f"{name}: not a readable CSV file ({exc})") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise UserError(f"{name}: no {' or '.join(repr(c) for c in missing)} column (columns: "
                        f"{', '.join(map(str, columns[:10])) or 'none'}); the table needs 'image' and 'caption'")
    return columns, rows


def _image_id(value: object) -> int | None:
    """An `image_id` cell as an id (JSON and parquet give ints, CSV digits), or None when it is not one."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if valid_id(value) else None


# long: one pass over the rows, each check a counted reason, as in coco._group_captions
def _group(rows: list[dict], *, has_ids: bool, name: str, report: CaptionReport) -> dict[str, tuple[int | None, list]]:
    """Image path → (its id or None, its cleaned captions in row order); unusable rows counted by reason."""
    images: dict[str, tuple[int | None, list[str]]] = {}
    for row in rows:
        image = row.get("image")
        if not isinstance(image, str) or not image.strip() or not safe_relative(image):
            report.problems["unsafe_file_name"].append(str(image)[:200])
            continue
        image_id = None
        if has_ids:
            image_id = _image_id(row.get("image_id"))
            if image_id is None:
                report.problems["bad_image_id"].append(image)
                continue
        known = images.setdefault(image, (image_id, []))
        if known[0] != image_id:
            raise UserError(f"{name}: image {image!r} has two ids ({known[0]} and {image_id}); one image, one id")
        caption = row.get("caption")
        if not isinstance(caption, str):
            report.problems["caption_not_text"].append(image)
        elif not (text := clean_caption(caption)):
            report.problems["empty_caption"].append(image)
        else:
            known[1].append(text)
    return images


def load_table(path: str | Path, image_root: str | Path, split: str | None) -> TableInput:
    """Every image of the table (the rows tagged `split`, when given) with its captions, sorted by id."""
    name = redact(str(path))
    columns, rows = read_rows(path)
    root = as_root(image_root)
    check_root(root, "--image-root")
    if split is not None:
        if "split" not in columns:
            raise UserError(f"{name}: --split {split} needs a 'split' column (columns: {', '.join(columns)})")
        rows = [row for row in rows if str(row.get("split")) == split]
    report = CaptionReport()
    images = _group(rows, has_ids="image_id" in columns, name=name, report=report)
    ids = {image: (image_id if image_id is not None else rank)
           for rank, (image, (image_id, _)) in enumerate(sorted(images.items()))}
    owners: dict[int, str] = {}
    for image, image_id in ids.items():
        if owners.setdefault(image_id, image) != image:
            raise UserError(f"{name}: image_id {image_id} is given to {owners[image_id]!r} and {image!r}; every "
                            "image needs its own id")
    records = []
    for image in sorted(images, key=ids.__getitem__):
        caps = tuple(images[image][1])
        if not caps:
            report.problems["no_captions"].append(image)
            continue
        records.append(CocoImage(image_id=ids[image], file_name=image, path=under(root, image), captions=caps))
    source = {"dataset": "table", "captions": Path(str(path).split("?", 1)[0]).name, "split": split,
              "rows": len(rows), "ids": "image_id column" if "image_id" in columns else "rank of the sorted paths"}
    return TableInput(records=records, report=report, source=source)

