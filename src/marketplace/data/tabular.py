"""Parse and clean the export's tables: Products.csv and Images.csv.

The real export has traps: descriptions hold bare ``\\r`` outside quotes (a naive reader
finds ~11k broken rows), prices are strings like ``£1,250.00`` with the odd ``Free``,
names carry ``| in <Town>, <County> | Gumtree``, and ids can repeat. Every problem is
recorded as an ``Issue`` with its reason; a row is either kept (possibly with a field set
to null and flagged) or dropped, never lost silently.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from marketplace.core.config import CleanTabularParams
from marketplace.data.export import Action, Issue, MalformedExportError, read_export_csv
from marketplace.data.labels import LabelMap
from marketplace.data.schema import (
    CATEGORY_SEPARATOR,
    IMAGE_COLUMNS,
    IMAGES_FILE,
    PRODUCT_COLUMNS,
    PRODUCTS_FILE,
)

_PRICE_RE = re.compile(r"^£?\s*(?P<number>\d{1,3}(?:,\d{3})+|\d+)(?P<fraction>\.\d{1,2})?$")
_NAME_SUFFIX = " | Gumtree"
_NAME_LOCATION_SEP = " | in "


@dataclass(frozen=True)
class CleanedTables:
    """Result of ``clean_tables``: the joined table, the label map and every issue."""

    listings: pd.DataFrame  # one row per image (products without images: one row, no image)
    label_map: LabelMap
    issues: list[Issue]
    products_in: int
    products_out: int
    images_in: int
    images_out: int

    def report(self) -> dict[str, object]:
        """Counts for the DVC metrics file: rows in and out, and rows per issue reason."""

        def by_reason(file: str, action: Action) -> dict[str, int]:
            counts = Counter(i.reason for i in self.issues if i.file == file and i.action == action)
            return dict(sorted(counts.items()))

        listings = self.listings
        return {
            "products": {
                "rows_in": self.products_in,
                "rows_out": self.products_out,
                "dropped": by_reason(PRODUCTS_FILE, "dropped"),
                "flagged": by_reason(PRODUCTS_FILE, "flagged"),
            },
            "images": {
                "rows_in": self.images_in,
                "rows_out": self.images_out,
                "dropped": by_reason(IMAGES_FILE, "dropped"),
            },
            "listings": {
                "rows": len(listings),
                "products_without_image": int(listings["image_id"].isna().sum()),
                "categories": len(self.label_map),
            },
        }

    def issues_frame(self) -> pd.DataFrame:
        """Every issue as a table (the per-row report written next to the metrics)."""
        columns = [f for f in Issue.__dataclass_fields__]
        return pd.DataFrame([asdict(i) for i in self.issues], columns=columns)


# --------------------------------------------------------------------------- field parsers


def parse_price(text: str) -> float:
    """Parse a GBP price such as ``£1,250.00`` or ``£5``; ``ValueError`` says why not.

    Deliberately strict: ``Free``, ``POA``, ``£1.2.3`` or an empty field are reported rather
    than guessed, because a wrong price silently poisons a price model.
    """
    cleaned = text.strip()
    if not cleaned:
        raise ValueError("empty price")
    match = _PRICE_RE.match(cleaned)
    if match is None:
        raise ValueError(f"not a GBP amount: {text!r}")
    return float(match["number"].replace(",", "") + (match["fraction"] or ""))


def split_product_name(name: str) -> tuple[str, str | None]:
    """Split ``"<title> | in <location> | Gumtree"`` into title and location.

    Titles may themselves contain ``" | "``, so the location is taken from the last
    ``" | in "``. A name without the Gumtree suffix is returned whole, with no location.
    """
    name = name.strip()
    if not name.endswith(_NAME_SUFFIX):
        return name, None
    body = name[: -len(_NAME_SUFFIX)]
    title, sep, location = body.rpartition(_NAME_LOCATION_SEP)
    if not sep:
        return body.strip(), None
    return title.strip(), location.strip() or None


def parse_location(location: str) -> tuple[str | None, str | None]:
    """Split ``"Town, County"`` into its parts; a single part (``"London"``) is the town."""
    location = location.strip()
    if not location:
        return None, None
    town, sep, county = location.rpartition(",")
    if not sep:
        return location, None
    return town.strip() or None, county.strip() or None


def parse_category(category: str) -> tuple[str, str]:
    """Return ``(root, full_path)`` of ``"Root / Sub / Leaf"``; ``ValueError`` if empty."""
    parts = [p.strip() for p in category.split(CATEGORY_SEPARATOR.strip())]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError("empty category")
    return parts[0], CATEGORY_SEPARATOR.join(parts)


def normalise_text(text: str) -> str:
    """Line breaks (``\\r``, ``\\r\\n``) become ``\\n``; surrounding whitespace goes."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


# --------------------------------------------------------------------------- cleaning


def _clean_products(
    rows: list[tuple[int, dict[str, str]]], params: CleanTabularParams
) -> tuple[pd.DataFrame, list[Issue]]:
    issues: list[Issue] = []
    ordered = rows if params.keep_duplicate == "first" else list(reversed(rows))
    seen: set[str] = set()
    records = []

    def report(line: int, pid: str, reason: str, detail: str, action: Action) -> None:
        issues.append(Issue(PRODUCTS_FILE, line, pid, reason, detail, action))

    for line, row in ordered:
        pid = row["id"].strip()
        if not pid:
            report(line, pid, "missing_id", "empty product id", "dropped")
            continue
        if pid in seen:
            report(
                line,
                pid,
                "duplicate_id",
                f"id already seen; kept the {params.keep_duplicate}",
                "dropped",
            )
            continue
        try:
            root, path = parse_category(row["category"])
        except ValueError as exc:
            report(line, pid, "missing_category", str(exc), "dropped")
            continue
        title, _ = split_product_name(row["product_name"])
        if not title:
            report(line, pid, "missing_name", "empty product name", "dropped")
            continue
        seen.add(pid)
        price: float | None
        try:
            price = parse_price(row["price"])
        except ValueError as exc:
            report(line, pid, "unparseable_price", str(exc), "flagged")
            price = None
        if price is not None and price > params.price_max:
            report(
                line, pid, "price_above_max", f"£{price:,.2f} > £{params.price_max:,.2f}", "flagged"
            )
            price = None
        town, county = parse_location(row["location"])
        records.append(
            {
                "product_id": pid,
                "title": title,
                "description": normalise_text(row["product_description"]),
                "price": price,
                "location": row["location"].strip() or None,
                "town": town,
                "county": county,
                "category_path": path,
                "root_category": root,
                "source_line": line,
            }
        )
    products = pd.DataFrame.from_records(records)
    if params.keep_duplicate == "last":
        products = products.iloc[::-1].reset_index(drop=True)
    issues.sort(key=lambda i: i.line)
    return products, issues


def _clean_images(
    rows: list[tuple[int, dict[str, str]]], product_ids: set[str], dropped_products: set[str]
) -> tuple[pd.DataFrame, list[Issue]]:
    issues: list[Issue] = []
    seen: set[str] = set()
    records = []
    for line, row in rows:
        iid, pid = row["id"].strip(), row["product_id"].strip()
        if not iid:
            issues.append(Issue(IMAGES_FILE, line, iid, "missing_id", "empty image id", "dropped"))
        elif iid in seen:
            issues.append(
                Issue(IMAGES_FILE, line, iid, "duplicate_id", "id already seen", "dropped")
            )
        elif pid in dropped_products and pid not in product_ids:
            issues.append(
                Issue(
                    IMAGES_FILE,
                    line,
                    iid,
                    "product_dropped",
                    f"product {pid} was dropped while cleaning Products.csv",
                    "dropped",
                )
            )
        elif pid not in product_ids:
            issues.append(
                Issue(
                    IMAGES_FILE,
                    line,
                    iid,
                    "orphan_image_row",
                    f"product_id {pid!r} is not in Products.csv",
                    "dropped",
                )
            )
        else:
            seen.add(iid)
            records.append(
                {
                    "image_id": iid,
                    "product_id": pid,
                    "image_ref": row["image_ref"].strip() or None,
                    "image_created": row["create_time"].strip() or None,
                }
            )
    columns = ["image_id", "product_id", "image_ref", "image_created"]
    return pd.DataFrame.from_records(records, columns=columns), issues


def clean_tables(export_dir: Path, params: CleanTabularParams) -> CleanedTables:
    """Clean ``Products.csv`` and ``Images.csv`` of an export and join them.

    The result has one row per image (a product with no image keeps one row with a null
    ``image_id``), the root category as an integer ``label`` from a sorted label map, and
    every dropped or flagged row as an ``Issue``.
    """
    product_rows, product_issues = read_export_csv(export_dir / PRODUCTS_FILE, PRODUCT_COLUMNS)
    image_rows, image_issues = read_export_csv(export_dir / IMAGES_FILE, IMAGE_COLUMNS)

    products, issues = _clean_products(product_rows, params)
    if products.empty:
        raise MalformedExportError(f"{PRODUCTS_FILE}: no usable product rows")
    product_ids = set(products["product_id"])
    dropped = {i.record_id for i in issues if i.action == "dropped"}
    images, more_issues = _clean_images(image_rows, product_ids, dropped)

    label_map = LabelMap.from_categories(products["root_category"])
    products["label"] = products["root_category"].map(label_map.index).astype("int64")
    listings = products.merge(images, on="product_id", how="left", validate="one_to_many")
    listings["price"] = listings["price"].astype("float64")
    listings = listings.sort_values(["source_line", "image_id"], kind="stable", na_position="first")
    listings = listings.drop(columns="source_line").reset_index(drop=True)
    return CleanedTables(
        listings=listings,
        label_map=label_map,
        issues=product_issues + issues + image_issues + more_issues,
        products_in=len(product_rows) + len(product_issues),
        products_out=len(products),
        images_in=len(image_rows) + len(image_issues),
        images_out=len(images),
    )
