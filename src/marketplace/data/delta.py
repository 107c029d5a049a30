"""Exports made from exports: a subset of the products, or the current one with changes.

An export is three entries (``schema``): ``Products.csv``, ``Images.csv`` and ``images/``.
``read_export`` reads both tables as the strings they hold (nothing is parsed, so what is
carried over is written back unchanged; records the reader cannot split are reported);
``write_export`` writes a new export folder atomically (built beside the target, then
swapped in), copying or linking the photos it keeps and writing new ones from bytes.

Used by ``marketplace.search.export_live`` (the next export: the current one plus the
listing changes the API acknowledged), and by the benchmarks and tests that build on part
of an export and then ingest all of it (``subset_export``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from marketplace.core.io import replace_dir
from marketplace.data.export import Issue, read_export_csv
from marketplace.data.images import index_image_files
from marketplace.data.schema import (
    CSV_LINE_TERMINATOR,
    IMAGE_COLUMNS,
    IMAGES_DIR,
    IMAGES_FILE,
    PRODUCT_COLUMNS,
    PRODUCTS_FILE,
)

Record = dict[str, str]


@dataclass
class ExportTables:
    """An export's two tables as strings, in file order, and where its photos are."""

    root: Path
    products: list[Record]
    images: list[Record]
    issues: list[Issue] = field(default_factory=list)  # records that could not be read

    def photo_files(self) -> dict[str, Path]:
        """Image id -> photo file (``images/<id>.<ext>``) for the ids that have one."""
        images_dir = self.root / IMAGES_DIR
        return index_image_files(images_dir) if images_dir.is_dir() else {}


def read_export(root: Path) -> ExportTables:
    """Both tables of the export at ``root`` (``MalformedExportError`` if unusable)."""
    products, product_issues = read_export_csv(root / PRODUCTS_FILE, PRODUCT_COLUMNS)
    images, image_issues = read_export_csv(root / IMAGES_FILE, IMAGE_COLUMNS)
    return ExportTables(
        root,
        [{c: row.get(c, "") for c in PRODUCT_COLUMNS} for _, row in products],
        [{c: row.get(c, "") for c in IMAGE_COLUMNS} for _, row in images],
        [*product_issues, *image_issues],
    )


def _write_table(path: Path, records: list[Record], columns: tuple[str, ...]) -> None:
    """One table in the export's layout: an unnamed index column first, ``\\n`` records."""
    frame = pd.DataFrame(records, columns=list(columns), dtype=str)
    frame.to_csv(path, index=True, lineterminator=CSV_LINE_TERMINATOR)


def _place(source: Path, target: Path) -> None:
    """A kept photo: a hard link where the file system allows (no copy of 1M photos),
    a copy otherwise. Photos are never edited in place, so sharing the inode is safe."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_export(
    out_dir: Path,
    products: list[Record],
    images: list[Record],
    photos: Mapping[str, Path | tuple[str, bytes]],
) -> None:
    """Write an export to ``out_dir`` (replacing what is there only once complete).

    ``photos``: image id -> the file to keep, or ``(extension, bytes)`` of a new photo;
    it is written as ``images/<id><extension>``.
    """
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        (staged / IMAGES_DIR).mkdir()
        _write_table(staged / PRODUCTS_FILE, products, PRODUCT_COLUMNS)
        _write_table(staged / IMAGES_FILE, images, IMAGE_COLUMNS)
        for image_id, photo in photos.items():
            if isinstance(photo, tuple):
                extension, data = photo
                (staged / IMAGES_DIR / f"{image_id}{extension}").write_bytes(data)
            else:
                _place(photo, staged / IMAGES_DIR / f"{image_id}{photo.suffix.lower()}")
        replace_dir(staged, out_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def subset_export(source: Path, out_dir: Path, product_ids: Iterable[str]) -> ExportTables:
    """The export at ``source`` restricted to ``product_ids`` (their image rows and photos),
    written to ``out_dir``: e.g. 94 % of a real export, to build on before ingesting all of it."""
    tables = read_export(source)
    keep = set(product_ids)
    products = [p for p in tables.products if p["id"].strip() in keep]
    images = [i for i in tables.images if i["product_id"].strip() in keep]
    files = tables.photo_files()
    photos = {i["id"].strip(): files[i["id"].strip()] for i in images if i["id"].strip() in files}
    write_export(out_dir, products, images, photos)
    return ExportTables(out_dir, products, images, tables.issues)
