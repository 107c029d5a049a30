"""Reading and validating a raw marketplace export (Products.csv, Images.csv, images/).

Two levels of trouble are kept apart: a whole export or table that is unusable raises
``MalformedExportError`` with a message that says what to fix; a single bad record
becomes an ``Issue`` (reason and action) and the rest of the table goes on.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from marketplace.data.schema import (
    IMAGE_COLUMNS,
    IMAGES_DIR,
    IMAGES_FILE,
    PRODUCT_COLUMNS,
    PRODUCTS_FILE,
)

Action = Literal["dropped", "flagged"]

# Bare "\r" inside a record is swapped for this private-use character while the CSV
# module splits records, then restored inside the field.
_CR_PLACEHOLDER = "\ue000"
_INDEX_COLUMN_NAMES = ("", "Unnamed: 0")


class MalformedExportError(ValueError):
    """An export, or one of its tables, is unusable as a whole; the message says why."""


@dataclass(frozen=True)
class Issue:
    """One problem found in one record of the export, and what was done about it."""

    file: str
    line: int  # 1-based line number in the file where the record starts
    record_id: str
    reason: str
    detail: str
    action: Action


Row = tuple[int, dict[str, str]]


def read_export_csv(path: Path, required: tuple[str, ...]) -> tuple[list[Row], list[Issue]]:
    """Read one of the export's CSVs as strings, record by record.

    Returns ``(rows, issues)``: rows are ``(line_number, {column: value})`` without the
    unnamed index column. A record with the wrong number of fields is an issue
    (``malformed_row``) and is skipped. Records end with ``\\n`` only: bare ``\\r`` inside
    a description never splits a record (naive readers find ~11k broken rows in the real
    export because of them).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MalformedExportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedExportError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", _CR_PLACEHOLDER)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise MalformedExportError(f"{path}: empty file") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise MalformedExportError(
            f"{path.name}: missing column(s) {', '.join(missing)}; its header is {header}"
        )
    width = len(header)
    id_column = header.index("id")
    keep = [(i, c) for i, c in enumerate(header) if c not in _INDEX_COLUMN_NAMES]
    rows: list[Row] = []
    issues: list[Issue] = []
    line = reader.line_num + 1
    for record in reader:
        if not record or (len(record) == 1 and not record[0].strip()):
            pass  # blank line
        elif len(record) != width:
            record_id = record[id_column] if len(record) > id_column else ""
            detail = f"{len(record)} fields, expected {width}"
            issues.append(
                Issue(path.name, line, _restore(record_id), "malformed_row", detail, "dropped")
            )
        else:
            rows.append((line, {c: _restore(record[i]) for i, c in keep}))
        line = reader.line_num + 1
    return rows, issues


def _restore(value: str) -> str:
    return value.replace(_CR_PLACEHOLDER, "\r")


@dataclass(frozen=True)
class ExportSummary:
    """What ``validate_export`` found: enough to tell a user what is being imported."""

    root: Path
    products: int
    image_rows: int
    image_files: int


def validate_export(root: Path) -> ExportSummary:
    """Check that ``root`` holds a usable export; ``MalformedExportError`` says what is wrong.

    A usable export has ``Products.csv`` and ``Images.csv`` with the expected columns and
    at least one record each, and an ``images/`` folder. Individual bad records are not
    errors here: the cleaning stages report them.
    """
    problems = []
    if not root.is_dir():
        raise MalformedExportError(f"{root}: not a folder")
    for name in (PRODUCTS_FILE, IMAGES_FILE):
        if not (root / name).is_file():
            problems.append(f"{name} is missing")
    if not (root / IMAGES_DIR).is_dir():
        problems.append(f"{IMAGES_DIR}/ folder is missing")
    if problems:
        raise MalformedExportError(f"{root} is not a marketplace export: {'; '.join(problems)}")
    products, _ = read_export_csv(root / PRODUCTS_FILE, PRODUCT_COLUMNS)
    images, _ = read_export_csv(root / IMAGES_FILE, IMAGE_COLUMNS)
    if not products:
        raise MalformedExportError(f"{root / PRODUCTS_FILE}: no product records")
    if not images:
        raise MalformedExportError(f"{root / IMAGES_FILE}: no image records")
    files = sum(1 for p in (root / IMAGES_DIR).iterdir() if p.is_file())
    return ExportSummary(root, len(products), len(images), files)


def find_export_root(folder: Path) -> Path:
    """The folder holding ``Products.csv``: ``folder`` itself or its single such subfolder.

    Zip archives often wrap the export in one top-level folder; that is accepted, an
    ambiguous archive (several exports) is not.
    """
    if (folder / PRODUCTS_FILE).exists():
        return folder
    candidates = sorted(p.parent for p in folder.glob(f"*/{PRODUCTS_FILE}"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise MalformedExportError(f"{folder}: no {PRODUCTS_FILE} at the top or one level down")
    names = ", ".join(str(c.relative_to(folder)) for c in candidates)
    raise MalformedExportError(f"{folder}: several exports inside ({names}); import one")
