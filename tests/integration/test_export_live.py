"""export_live: the catalogue log's changes become the next export; compaction is bounded.

Rows are written straight into a SQLite catalogue log with the schema's table (as the API
would), over a small synthetic export; the next export must be a valid export whose cleaned
tables hold the live listings (added, changed, deleted), and ``compact`` must delete the
folded rows and never one acknowledged after the export.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from marketplace.core.config import load_params
from marketplace.core.db import engine
from marketplace.data.delta import read_export
from marketplace.data.export import validate_export
from marketplace.data.sample import generate_sample
from marketplace.data.tabular import clean_tables
from marketplace.search import catalogue_schema as schema
from marketplace.search.export_live import main
from tests.helpers import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(out, "JPEG")
    return out.getvalue()


def put(db: sa.Engine, product_id: str, **fields: object) -> None:
    row = {
        "product_id": product_id,
        "op": "put",
        "ts": time.time(),
        "title": "t",
        "description": "d",
        "price": 5.0,
        "location": "Leeds, West Yorkshire",
        "category": "Appliances",
        "category_source": "seller",
        **fields,
    }
    if row.get("image") is not None:
        import hashlib

        row["image_sha256"] = hashlib.sha256(row["image"]).hexdigest()  # type: ignore[arg-type]
    with db.begin() as connection:
        connection.execute(sa.insert(schema.changes).values(**row))


def delete(db: sa.Engine, product_id: str) -> None:
    with db.begin() as connection:
        connection.execute(
            sa.insert(schema.changes).values(product_id=product_id, op="delete", ts=time.time())
        )


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, object]:
    generate_sample(tmp_path / "data", seed=1, per_category=1)
    products = read_export(tmp_path / "data").products
    changed, deleted, twice = (products[i]["id"] for i in (0, 1, 2))
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    db = engine(url)
    schema.create(db)
    photo = jpeg((200, 10, 10))
    put(db, "live-1", title="Red kettle", price=1250.0, image=photo)
    put(db, changed, title="First edit", category="Home & Garden")
    delete(db, deleted)
    put(db, "live-2", title="Sold at once")
    delete(db, "live-2")
    put(db, twice, title="Old title", category="Other Goods")
    put(db, twice, title="New title", category="Other Goods", price=None)
    put(db, changed, title="Second edit", category=products[0]["category"].split(" / ")[0])
    return {
        "root": tmp_path,
        "url": url,
        "db": db,
        "photo": photo,
        "changed": changed,
        "deleted": deleted,
        "twice": twice,
        "original": products,
    }


def export(setup: dict, out: str, *extra: str) -> dict:
    root: Path = setup["root"]  # type: ignore[assignment]
    summary = root / f"{out}.json"
    assert (
        main(
            [
                "--url",
                setup["url"],
                "--export",
                str(root / "data"),
                "--out",
                str(root / out),
                "--summary",
                str(summary),
                *extra,
            ]
        )
        == 0
    )
    return json.loads(summary.read_text())


def test_the_next_export_holds_the_live_changes(setup: dict) -> None:
    root: Path = setup["root"]
    summary = export(setup, "next")
    assert summary | {"out": ""} == {
        "upto_seq": 8,
        "changes": 8,
        "added": 1,
        "changed": 2,
        "deleted": 1,
        "deleted_unknown": 1,
        "unchanged": len({p["id"] for p in setup["original"]}) - 3,
        "photos_added": 1,
        "unreadable_records": 0,
        "out": "",
    }
    validate_export(root / "next")  # marketplace.data.ingest accepts it
    cleaned = clean_tables(root / "next", load_params(PROJECT_ROOT / "params.yaml").clean_tabular)
    listings = cleaned.listings.drop_duplicates("product_id").set_index("product_id")
    assert setup["deleted"] not in listings.index and "live-2" not in listings.index
    live = listings.loc["live-1"]
    assert (live["title"], live["price"], live["root_category"]) == (
        "Red kettle",
        1250.0,
        "Appliances",
    )
    assert live["location"] == "Leeds, West Yorkshire"
    changed = listings.loc[setup["changed"]]
    assert changed["title"] == "Second edit"
    assert changed["category_path"] == setup["original"][0]["category"]  # root unchanged: kept
    assert pd_isna(changed["image_id"])  # the latest PUT carried no photo
    twice = listings.loc[setup["twice"]]
    assert (twice["title"], twice["root_category"]) == ("New title", "Other Goods")
    assert pd_isna(twice["price"])
    photo_rows = [i for i in read_export(root / "next").images if i["product_id"] == "live-1"]
    assert len(photo_rows) == 1
    assert (root / "next/images" / f"{photo_rows[0]['id']}.jpg").read_bytes() == setup["photo"]
    nxt, data = read_export(root / "next"), read_export(root / "data")
    assert all(i["product_id"] != setup["deleted"] for i in nxt.images)
    before, after = data.photo_files(), nxt.photo_files()
    assert set(after) == {i["id"] for i in nxt.images if i["id"] in before} | {photo_rows[0]["id"]}
    assert all(after[i].read_bytes() == before[i].read_bytes() for i in after if i in before)
    # Exporting the same log again gives the same export
    export(setup, "again")
    for name in ("Products.csv", "Images.csv"):
        assert (root / "next" / name).read_bytes() == (root / "again" / name).read_bytes()


def pd_isna(value: object) -> bool:
    return value is None or value != value  # NaN


def test_compact_deletes_the_folded_rows_and_never_a_later_one(setup: dict) -> None:
    summary = export(setup, "next", "--upto", "6")  # rows 7 and 8 wait for the next export
    assert summary["upto_seq"] == 6 and summary["changes"] == 6
    put(setup["db"], "live-3", title="After the export")  # seq 9
    assert main(["compact", "--url", setup["url"], "--upto", str(summary["upto_seq"])]) == 0
    with setup["db"].connect() as connection:
        left = connection.execute(sa.select(schema.changes.c.seq).order_by("seq")).scalars()
        assert list(left) == [7, 8, 9]
    assert main(["compact", "--url", setup["url"]]) == 2  # --upto is required
