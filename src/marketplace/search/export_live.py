"""The pipeline's way back: the catalogue log's changes folded into the next export.

    python -m marketplace.search.export_live --out ../next-export        # data/ + the log
    python -m marketplace.data.ingest --from ../next-export && dvc repro          # train on it
    python -m marketplace.search.export_live compact --upto 1234          # once promoted

``export`` reads the current export (``--export``, default ``data/``) and the changes the
API acknowledged (``catalogue_schema.changes`` in the database ``--url``, default the
catalogue log's, ``MARKETPLACE_CATALOGUE_URL`` or ``live/catalogue.db``) up to a ``seq``
(``--upto``, default the newest row when it starts, so changes acknowledged meanwhile wait
for the next export), keeps the latest change per product, and writes the next export in
the raw export's format (``data.schema``):

- a ``put`` of a listing the export has replaces its row where it stands (its photos
  become the one the change carries, or none: a ``PUT`` is the whole listing, as the API
  replays it); the category is kept as the export's full path when its root is unchanged;
- a ``put`` of a new listing is appended, in log order;
- a ``delete`` drops the listing, its image rows and photos.

A photo is written as it was uploaded, as ``images/<image id>.<its type>``, with an image
id derived from the product id and the photo's SHA-256 (the same change always gives the
same id, so exporting twice gives the same export). Records of the current export that
cannot be read are reported (and, as ``pipeline.clean_tabular`` would, left out). The
summary (``--summary``, JSON) says what was added, changed and deleted and up to which
``seq``: the number to pass to ``compact``.

``compact --upto SEQ`` deletes the log's rows with ``seq <= SEQ``, never a later one. Run
it once the model version trained on that export is in production: until then the API
serves the previous build, and the log is what puts those changes on top of it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image, UnidentifiedImageError

from marketplace.core.db import default_url, engine, redacted
from marketplace.core.errors import StageError
from marketplace.data.delta import Record, read_export, write_export
from marketplace.data.schema import CATEGORY_SEPARATOR, PRODUCT_COLUMNS
from marketplace.search.catalogue_schema import changes

log = logging.getLogger("marketplace.search.export_live")

# Image ids of photos that came through the API: uuid5 in this namespace of
# "<product id>:<photo SHA-256>" (the export's own ids are UUIDs as well).
PHOTO_NAMESPACE = uuid.UUID("1d6f6a3e-2b8e-4f57-9d37-6a1c7c0e5b21")
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


@dataclass(frozen=True)
class ExportSummary:
    """What ``export_live`` folded in (counted in products)."""

    upto_seq: int  # the newest log row folded in: ``compact --upto`` this
    changes: int  # log rows read (all kinds, before the latest per product is kept)
    added: int
    changed: int
    deleted: int
    deleted_unknown: int  # deletes of listings the export never had (added and sold live)
    unchanged: int
    photos_added: int
    unreadable_records: int  # of the current export, reported and left out
    out: str


def newest_seq(db: sa.Engine) -> int:
    """The log's newest ``seq`` (0 when empty)."""
    with db.connect() as connection:
        return int(connection.execute(sa.select(sa.func.max(changes.c.seq))).scalar() or 0)


def latest_changes(db: sa.Engine, upto: int) -> tuple[dict[str, dict[str, Any]], int]:
    """The latest row (``seq <= upto``) per product id, photo bytes included, in log order;
    and how many rows were read."""
    newest = (
        sa.select(sa.func.max(changes.c.seq).label("seq"))
        .where(changes.c.seq <= upto)
        .group_by(changes.c.product_id)
        .subquery()
    )
    query = (
        sa.select(changes)
        .join(newest, changes.c.seq == newest.c.seq)
        .order_by(changes.c.seq)
        .execution_options(yield_per=500)
    )
    count = sa.select(sa.func.count()).select_from(changes).where(changes.c.seq <= upto)
    with db.connect() as connection:
        rows = {row.product_id: dict(row._mapping) for row in connection.execute(query)}
        return rows, int(connection.execute(count).scalar() or 0)


def _price(value: float | None) -> str:
    """The export's price text (``£1,250.00``; empty when unknown: reported by cleaning)."""
    return "" if value is None else f"£{value:,.2f}"


def _product_row(change: dict[str, Any], current: Record | None) -> Record:
    """A ``put`` as a ``Products.csv`` record (``pipeline.clean_tabular`` reads it back to
    the same title, description, price, location and root category)."""
    title = (change["title"] or "").strip()
    location = (change["location"] or "").strip()
    category = change["category"] or ""
    if current is not None:
        root = current["category"].split(CATEGORY_SEPARATOR.strip())[0].strip()
        if root == category:  # keep the export's full path (its sub-categories)
            category = current["category"]
    row = dict.fromkeys(PRODUCT_COLUMNS, "")
    row |= {
        "id": change["product_id"],
        "product_name": f"{title} | in {location} | Gumtree" if location else title,
        "category": category,
        "product_description": change["description"] or "",
        "price": _price(change["price"]),
        "location": location,
    }
    return row


def _photo(change: dict[str, Any]) -> tuple[str, str, bytes]:
    """``(image id, extension, bytes)`` of a change's photo, as uploaded."""
    data = bytes(change["image"])
    digest = change["image_sha256"] or ""
    image_id = str(uuid.uuid5(PHOTO_NAMESPACE, f"{change['product_id']}:{digest}"))
    try:
        with Image.open(io.BytesIO(data)) as image:
            extension = EXTENSIONS.get(str(image.format), ".jpg")
    except (UnidentifiedImageError, OSError):
        # The API refuses photos it cannot read, so this is not expected; the cleaning
        # stage will report the file with its reason rather than lose the listing.
        log.warning("product %s: photo of an unknown type, written as .jpg", change["product_id"])
        extension = ".jpg"
    return image_id, extension, data


def fold_changes(export_dir: Path, out_dir: Path, db: sa.Engine, upto: int) -> ExportSummary:
    """Write the next export to ``out_dir``: ``export_dir`` plus the log's changes up to
    ``upto`` (see the module docstring)."""
    latest, read = latest_changes(db, upto)
    current = read_export(export_dir)
    for issue in current.issues:
        log.warning(
            "%s line %d (%s): %s, %s; left out of the next export",
            issue.file,
            issue.line,
            issue.record_id or "-",
            issue.reason,
            issue.detail,
        )
    files = current.photo_files()
    products: list[Record] = []
    seen: set[str] = set()
    counts = {"changed": 0, "deleted": 0, "unchanged": 0}
    for record in current.products:
        pid = record["id"].strip()
        change = latest.get(pid)
        if change is None:
            products.append(record)
            counts["unchanged"] += pid not in seen
        elif change["op"] == "put":
            if pid not in seen:  # a repeated id: the change replaces the listing once
                products.append(_product_row(change, record))
                counts["changed"] += 1
        else:
            counts["deleted"] += pid not in seen
        seen.add(pid)
    touched = set(latest)
    images = [i for i in current.images if i["product_id"].strip() not in touched]
    photos: dict[str, Path | tuple[str, bytes]] = {
        i["id"].strip(): files[i["id"].strip()] for i in images if i["id"].strip() in files
    }
    added = deleted_unknown = photos_added = 0
    for pid, change in latest.items():  # log order
        if change["op"] != "put":
            deleted_unknown += pid not in seen
            continue
        if pid not in seen:
            products.append(_product_row(change, None))
            added += 1
        if change["image"] is not None:
            image_id, extension, data = _photo(change)
            day = time.strftime("%Y-%m-%d", time.gmtime(change["ts"]))
            images.append(
                {
                    "id": image_id,
                    "product_id": pid,
                    "bucket_link": "",
                    "image_ref": "",
                    "create_time": day,
                }
            )
            photos[image_id] = (extension, data)
            photos_added += 1
    write_export(out_dir, products, images, photos)
    return ExportSummary(
        upto_seq=max((int(c["seq"]) for c in latest.values()), default=0),
        changes=read,
        added=added,
        changed=counts["changed"],
        deleted=counts["deleted"],
        deleted_unknown=deleted_unknown,
        unchanged=counts["unchanged"],
        photos_added=photos_added,
        unreadable_records=len(current.issues),
        out=str(out_dir),
    )


def compact(db: sa.Engine, upto: int) -> int:
    """Delete the log's rows with ``seq <= upto`` (folded into an export); returns how
    many. Rows acknowledged later have a higher ``seq`` and are never touched."""
    with db.begin() as connection:
        return int(connection.execute(sa.delete(changes).where(changes.c.seq <= upto)).rowcount)


def main(argv: list[str] | None = None) -> int:
    from marketplace.cli import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=("export", "compact"), default="export")
    parser.add_argument("--url", default=None, help="the catalogue log's database URL")
    parser.add_argument("--export", type=Path, default=Path("data"), help="the current export")
    parser.add_argument("--out", type=Path, help="where the next export is written (export)")
    parser.add_argument("--upto", type=int, help="newest seq to fold in or compact")
    parser.add_argument("--summary", type=Path, help="also write the summary here (JSON)")
    args = parser.parse_args(argv)

    def body() -> None:
        url = args.url or default_url("catalogue")
        db = engine(url)
        if not sa.inspect(db).has_table(changes.name):
            raise StageError(f"{redacted(url)} has no {changes.name} table: nothing to export")
        if args.command == "compact":
            if args.upto is None:
                raise StageError("compact needs --upto SEQ (the export's upto_seq)")
            log.info(
                "deleted %d rows with seq <= %d from %s",
                compact(db, args.upto),
                args.upto,
                redacted(url),
            )
            return
        if args.out is None:
            raise StageError("export needs --out FOLDER")
        if args.out.resolve() == args.export.resolve():
            raise StageError("--out must not be the current export (ingest it instead)")
        upto = newest_seq(db) if args.upto is None else args.upto
        summary = fold_changes(args.export, args.out, db, upto)
        if args.summary is not None:
            args.summary.parent.mkdir(parents=True, exist_ok=True)
            args.summary.write_text(json.dumps(asdict(summary), indent=2) + "\n")
        log.info(
            "%s: %d added, %d changed, %d deleted (%d unchanged) from %d log rows up to seq %d;"
            " next: python -m marketplace.data.ingest --from %s && dvc repro",
            summary.out,
            summary.added,
            summary.changed,
            summary.deleted,
            summary.unchanged,
            summary.changes,
            summary.upto_seq,
            summary.out,
        )

    return run(body, "marketplace.search.export_live")


if __name__ == "__main__":
    raise SystemExit(main())
