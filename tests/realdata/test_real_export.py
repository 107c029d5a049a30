"""The real Gumtree export (../shared/data/marketplace), where present: skipped elsewhere.

Checks the traps the real file holds: every product parses despite bare "\\r" in
descriptions, 13 root categories, and every image row is either cleaned (its photo is
present) or reported as missing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from marketplace.core.config import load_params
from marketplace.data.images import clean_image_files, index_image_files
from marketplace.data.schema import ROOT_CATEGORIES
from marketplace.data.tabular import CleanedTables, clean_tables
from tests.helpers import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def tables(real_export: Path) -> CleanedTables:
    return clean_tables(real_export, load_params(PROJECT_ROOT / "params.yaml").clean_tabular)


def test_all_products_parse(tables: CleanedTables, real_export: Path) -> None:
    reference = pd.read_csv(real_export / "Products.csv", lineterminator="\n", dtype=str)
    assert len(reference) == 6732
    assert tables.products_in == tables.products_out == 6732
    assert not [i for i in tables.issues if i.reason == "malformed_row"]
    assert set(tables.listings["product_id"]) == set(reference["id"])
    carriage = tables.listings["description"].str.contains("\n").sum()
    assert carriage > 1000, "descriptions with bare \\r keep their line breaks as \\n"


def test_thirteen_root_categories(tables: CleanedTables) -> None:
    assert tables.label_map.categories == ROOT_CATEGORIES
    assert tables.listings["label"].nunique() == 13


def test_every_image_row_joined(tables: CleanedTables) -> None:
    assert tables.images_in == tables.images_out == 11858
    assert not [i for i in tables.issues if i.file == "Images.csv"]


def test_one_cleaned_image_per_photo_and_every_missing_one_reported(
    tables: CleanedTables, real_export: Path, tmp_path: Path
) -> None:
    files = index_image_files(real_export / "images")
    assert len(files) == 5390
    ids = list(tables.listings["image_id"].dropna())
    present = [i for i in ids if i in files]
    missing = [i for i in ids if i not in files]
    assert (len(present), len(missing)) == (5390, 11858 - 5390)
    results = list(
        clean_image_files(
            present + missing,
            real_export / "images",
            tmp_path,
            size=128,
            jpeg_quality=90,
            workers=2,
            progress=False,
        )
    )
    status = {r.image_id: r.status for r in results}
    assert all(status[i] == "ok" for i in present)
    assert all(status[i] == "missing_file" for i in missing)
    assert sorted(p.stem for p in tmp_path.iterdir()) == sorted(present)
