"""Every deliberate fault of the built-in sample is reported with its reason, nothing else.

The sample generator returns the list of faults it planted; the cleaning stages must
report exactly those (no silent drop, no false alarm) and keep every other row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from marketplace.core.config import CleanTabularParams
from marketplace.data.images import clean_export_images
from marketplace.data.sample import SampleFaults, generate_sample
from marketplace.data.tabular import CleanedTables, clean_tables


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleFaults]:
    root = tmp_path_factory.mktemp("sample") / "data"
    return root, generate_sample(root, seed=0, per_category=8)


@pytest.fixture(scope="module")
def tables(sample: tuple[Path, SampleFaults]) -> CleanedTables:
    return clean_tables(sample[0], CleanTabularParams(price_max=100_000.0, keep_duplicate="first"))


@pytest.fixture(scope="module")
def image_report(
    sample: tuple[Path, SampleFaults], tmp_path_factory: pytest.TempPathFactory
) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("clean") / "images"
    report, _ = clean_export_images(
        sample[0], out, size=64, jpeg_quality=90, workers=2, progress=False
    )
    return report


def test_tabular_issues_are_exactly_the_planted_faults(
    sample: tuple[Path, SampleFaults], tables: CleanedTables
) -> None:
    faults = sample[1]
    got = sorted((i.record_id, i.reason, i.action) for i in tables.issues)
    expected = sorted(
        [(pid, "unparseable_price", "flagged") for pid in faults.bad_price_product_ids]
        + [(pid, "duplicate_id", "dropped") for pid in faults.duplicate_product_ids]
        + [(iid, "orphan_image_row", "dropped") for iid in faults.orphan_image_ids]
    )
    assert got == expected


def test_nothing_else_is_dropped(sample: tuple[Path, SampleFaults], tables: CleanedTables) -> None:
    raw = pd.read_csv(sample[0] / "Products.csv", lineterminator="\n", dtype=str)
    images = pd.read_csv(sample[0] / "Images.csv", dtype=str)
    assert tables.products_in == len(raw)
    assert tables.products_out == raw["id"].nunique() == len(raw) - 1
    assert tables.images_out == len(images) - len(sample[1].orphan_image_ids)
    listings = tables.listings
    assert set(listings["product_id"]) == set(raw["id"])
    assert listings["image_id"].dropna().nunique() == tables.images_out
    assert listings.drop_duplicates("product_id")["price"].isna().sum() == len(
        sample[1].bad_price_product_ids
    )


def test_image_failures_are_exactly_the_planted_faults(
    sample: tuple[Path, SampleFaults], image_report: pd.DataFrame
) -> None:
    faults = sample[1]
    failed = image_report[image_report["status"] != "ok"]
    got = sorted(zip(failed["image_id"], failed["status"], strict=True))
    expected = sorted(
        [(i, "missing_file") for i in faults.missing_file_image_ids]
        + [(i, "corrupt_image") for i in faults.truncated_image_ids]
        + [(i, "not_an_image") for i in faults.not_an_image_ids]
    )
    assert got == expected
    assert all(failed["detail"].str.len() > 0), "every failure says why"


def test_every_other_image_is_cleaned(
    sample: tuple[Path, SampleFaults], image_report: pd.DataFrame
) -> None:
    ok = image_report[image_report["status"] == "ok"]
    images = pd.read_csv(sample[0] / "Images.csv", dtype=str)
    faults = sample[1]
    broken = (
        set(faults.missing_file_image_ids)
        | set(faults.truncated_image_ids)
        | set(faults.not_an_image_ids)
    )
    assert set(ok["image_id"]) == set(images["id"]) - broken
    assert {"RGB", "L", "CMYK", "RGBA"} <= set(ok["mode"])
