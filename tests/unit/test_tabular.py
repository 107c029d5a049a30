"""Field parsers and table cleaning on small hand-written exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketplace.core.config import CleanTabularParams
from marketplace.data.export import MalformedExportError, read_export_csv
from marketplace.data.schema import IMAGE_COLUMNS, PRODUCT_COLUMNS
from marketplace.data.tabular import (
    clean_tables,
    normalise_text,
    parse_category,
    parse_location,
    parse_price,
    split_product_name,
)

PARAMS = CleanTabularParams(price_max=100_000.0, keep_duplicate="first")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("£5.00", 5.0),
        ("£1,250.00", 1250.0),
        ("£10,000,000.00", 10_000_000.0),
        ("£0.00", 0.0),
        ("£7", 7.0),
        ("£7.5", 7.5),
        ("12.99", 12.99),
        ("  £40.00 ", 40.0),
        ("£ 3.00", 3.0),
    ],
)
def test_parse_price_accepts_gbp_amounts(text: str, expected: float) -> None:
    assert parse_price(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Free", "not a GBP amount"),
        ("POA", "not a GBP amount"),
        ("£abc", "not a GBP amount"),
        ("£1.2.3", "not a GBP amount"),
        ("£12,34.00", "not a GBP amount"),
        ("-£5.00", "not a GBP amount"),
        ("$5.00", "not a GBP amount"),
        ("£5.000", "not a GBP amount"),
    ],
)
def test_parse_price_rejects_garbage_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_price(text)


@pytest.mark.parametrize(
    ("name", "title", "location"),
    [
        ("Oak desk | in Leeds, West Yorkshire | Gumtree", "Oak desk", "Leeds, West Yorkshire"),
        (
            "PS4 Game | Watch Dogs | in Bournemouth, Dorset | Gumtree",
            "PS4 Game | Watch Dogs",
            "Bournemouth, Dorset",
        ),
        (
            "MacBook| 16GB | in Ealing Broadway, London | Gumtree",
            "MacBook| 16GB",
            "Ealing Broadway, London",
        ),
        ("Sofa | in London | Gumtree", "Sofa", "London"),
        ("No suffix at all", "No suffix at all", None),
        ("Lamp | Gumtree", "Lamp", None),
    ],
)
def test_split_product_name(name: str, title: str, location: str | None) -> None:
    assert split_product_name(name) == (title, location)


@pytest.mark.parametrize(
    ("location", "town", "county"),
    [
        ("Wokingham, Berkshire", "Wokingham", "Berkshire"),
        ("Old Trafford, Manchester", "Old Trafford", "Manchester"),
        ("London", "London", None),
        ("  Cardiff ", "Cardiff", None),
        ("", None, None),
    ],
)
def test_parse_location(location: str, town: str | None, county: str | None) -> None:
    assert parse_location(location) == (town, county)


def test_parse_category_root_and_path() -> None:
    assert parse_category("Home & Garden / Garden & Patio / Outdoor Settings") == (
        "Home & Garden",
        "Home & Garden / Garden & Patio / Outdoor Settings",
    )
    assert parse_category("Appliances") == ("Appliances", "Appliances")
    with pytest.raises(ValueError, match="empty category"):
        parse_category("  ")


def test_normalise_text_turns_carriage_returns_into_newlines() -> None:
    assert normalise_text(" a\rb\r\nc \n") == "a\nb\nc"


HEADER = ",id,product_name,category,product_description,price,location\n"
IMAGES_HEADER = ",id,product_id,bucket_link,image_ref,create_time\n"


def _product(
    i: int,
    pid: str,
    price: str = "£5.00",
    category: str = "Appliances / Kettles",
    description: str = "Nice",
) -> str:
    return (
        f'{i},{pid},"Kettle | in Leeds, West Yorkshire | Gumtree",{category},{description},'
        f'{price},"Leeds, West Yorkshire"\n'
    )


def _write_export(tmp_path: Path, products: str, images: str) -> Path:
    (tmp_path / "Products.csv").write_bytes((HEADER + products).encode())
    (tmp_path / "Images.csv").write_bytes((IMAGES_HEADER + images).encode())
    return tmp_path


def test_bare_carriage_returns_do_not_split_records(tmp_path: Path) -> None:
    body = _product(0, "p1", description="line one\rline two\rline three") + _product(1, "p2")
    path = _write_export(tmp_path, body, "").joinpath("Products.csv")
    rows, issues = read_export_csv(path, PRODUCT_COLUMNS)
    assert issues == []
    assert [r["id"] for _, r in rows] == ["p1", "p2"]
    assert rows[0][1]["product_description"] == "line one\rline two\rline three"
    assert [line for line, _ in rows] == [2, 3]


def test_malformed_record_is_reported_and_skipped(tmp_path: Path) -> None:
    body = _product(0, "p1") + "1,p2,only three\n" + _product(2, "p3")
    rows, issues = read_export_csv(
        _write_export(tmp_path, body, "") / "Products.csv", PRODUCT_COLUMNS
    )
    assert [r["id"] for _, r in rows] == ["p1", "p3"]
    assert [(i.line, i.record_id, i.reason, i.action) for i in issues] == [
        (3, "p2", "malformed_row", "dropped")
    ]


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "Images.csv").write_text(",id,product_id\n0,a,b\n")
    with pytest.raises(MalformedExportError, match=r"missing column.*bucket_link"):
        read_export_csv(tmp_path / "Images.csv", IMAGE_COLUMNS)


def test_clean_tables_reports_every_problem(tmp_path: Path) -> None:
    products = (
        _product(0, "p1")
        + _product(1, "p2", price="Free", category="Baby & Kids Stuff / Toys")
        + _product(2, "p1", price="£9.00")  # duplicate id
        + _product(3, "p3", price='"£10,000,000.00"')  # placeholder price
        + _product(4, "p4", category="")  # no category
        + _product(5, "p5", category="Baby & Kids Stuff")  # no image at all
    )
    images = (
        "0,i1,p1,link,ref1,2022-02-26\n"
        "1,i2,p1,link,ref2,2022-02-26\n"
        "2,i3,p2,link,ref3,2022-02-27\n"
        "3,i4,p3,link,ref4,2022-02-27\n"
        "4,i5,zzz,link,ref5,2022-02-27\n"  # orphan
        "5,i6,p4,link,ref6,2022-02-27\n"  # product dropped
        "6,i1,p1,link,ref1,2022-02-26\n"  # duplicate image id
    )
    result = clean_tables(_write_export(tmp_path, products, images), PARAMS)

    got = {(i.file, i.record_id, i.reason, i.action) for i in result.issues}
    assert got == {
        ("Products.csv", "p2", "unparseable_price", "flagged"),
        ("Products.csv", "p1", "duplicate_id", "dropped"),
        ("Products.csv", "p3", "price_above_max", "flagged"),
        ("Products.csv", "p4", "missing_category", "dropped"),
        ("Images.csv", "i5", "orphan_image_row", "dropped"),
        ("Images.csv", "i6", "product_dropped", "dropped"),
        ("Images.csv", "i1", "duplicate_id", "dropped"),
    }
    listings = result.listings
    assert list(listings["image_id"].fillna("-")) == ["i1", "i2", "i3", "i4", "-"]
    kept = listings.drop_duplicates("product_id").set_index("product_id")
    assert kept.loc["p1", "price"] == 5.0  # the first row of the duplicate id won
    assert kept[["price"]].loc[["p2", "p3"]].isna().all().all()
    assert kept.loc["p1", "title"] == "Kettle"
    assert (kept.loc["p1", "town"], kept.loc["p1", "county"]) == ("Leeds", "West Yorkshire")
    assert result.label_map.categories == ("Appliances", "Baby & Kids Stuff")
    assert kept.loc["p5", "label"] == 1

    report = result.report()
    assert report["products"] == {
        "rows_in": 6,
        "rows_out": 4,
        "dropped": {"duplicate_id": 1, "missing_category": 1},
        "flagged": {"price_above_max": 1, "unparseable_price": 1},
    }
    assert report["images"]["rows_in"] == 7 and report["images"]["rows_out"] == 4
    assert report["listings"] == {"rows": 5, "products_without_image": 1, "categories": 2}


def test_keep_last_duplicate(tmp_path: Path) -> None:
    products = _product(0, "p1", price="£1.00") + _product(1, "p1", price="£2.00")
    params = CleanTabularParams(price_max=100.0, keep_duplicate="last")
    result = clean_tables(_write_export(tmp_path, products, ""), params)
    assert list(result.listings["price"]) == [2.0]
    assert [(i.line, i.reason) for i in result.issues] == [(2, "duplicate_id")]
