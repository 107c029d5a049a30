"""The split: grouped by product, stratified by category, seeded, complete and disjoint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from marketplace.data.split import read_split, split_products, split_summary, write_split


@pytest.fixture
def listings() -> pd.DataFrame:
    rows = []
    for cat, n in (("a", 100), ("b", 40), ("c", 7)):
        for i in range(n):
            for image in range(1 + i % 3):  # several rows per product, as after the join
                rows.append(
                    {
                        "product_id": f"{cat}{i:03d}",
                        "root_category": cat,
                        "image_id": f"{cat}{i}-{image}",
                    }
                )
    return pd.DataFrame(rows)


def test_every_product_in_exactly_one_split(listings: pd.DataFrame) -> None:
    splits = split_products(listings, seed=0, val_fraction=0.15, test_fraction=0.15)
    ids = [i for name in ("train", "val", "test") for i in splits[name]]
    assert len(ids) == len(set(ids)) == listings["product_id"].nunique()


def test_stratified_per_category(listings: pd.DataFrame) -> None:
    splits = split_products(listings, seed=0, val_fraction=0.15, test_fraction=0.15)
    metrics, table = split_summary(listings, splits)
    assert table.set_index("root_category").to_dict("index") == {
        "a": {"train": 70, "val": 15, "test": 15},
        "b": {"train": 28, "val": 6, "test": 6},
        "c": {"train": 5, "val": 1, "test": 1},
    }
    assert metrics["test"] == {"products": 22, "categories": 3, "smallest_category": 1}


def test_seeded_and_order_independent(listings: pd.DataFrame) -> None:
    first = split_products(listings, seed=7, val_fraction=0.2, test_fraction=0.1)
    shuffled = listings.sample(frac=1.0, random_state=3)
    assert split_products(shuffled, seed=7, val_fraction=0.2, test_fraction=0.1) == first
    assert split_products(listings, seed=8, val_fraction=0.2, test_fraction=0.1) != first


def test_bad_fractions(listings: pd.DataFrame) -> None:
    with pytest.raises(ValueError):
        split_products(listings, seed=0, val_fraction=0.6, test_fraction=0.4)


def test_write_read_round_trip(listings: pd.DataFrame, tmp_path: Path) -> None:
    splits = split_products(listings, seed=0, val_fraction=0.15, test_fraction=0.15)
    write_split(splits, tmp_path)
    assert read_split(tmp_path) == splits
