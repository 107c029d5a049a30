"""The split: grouped by product, stable (a hash of the id), complete and disjoint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.data.split import (
    read_split,
    split_bucket,
    split_of,
    split_products,
    split_summary,
    write_split,
)


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


def test_stratified_per_category_in_expectation() -> None:
    """The bucket ignores the category, so each category gets the shares on average."""
    ids = [f"{cat}{i:05d}" for cat, n in (("a", 4000), ("b", 2000)) for i in range(n)]
    frame = pd.DataFrame({"product_id": ids, "root_category": [i[0] for i in ids]})
    splits = split_products(frame, seed=0, val_fraction=0.15, test_fraction=0.15)
    metrics, table = split_summary(frame, splits)
    shares = table.set_index("root_category")
    shares = shares.div(shares.sum(axis=1), axis=0)
    for name, expected in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        # 3.5 standard deviations of a binomial share at n = 2,000
        assert abs(shares[name] - expected).max() < 3.5 * (expected * (1 - expected) / 2000) ** 0.5
    assert metrics["test"]["categories"] == 2


def test_split_depends_only_on_the_id_and_seed() -> None:
    kwargs = {"val_fraction": 0.15, "test_fraction": 0.15}
    assert split_of("p1", seed=1, **kwargs) == split_of("p1", seed=1, **kwargs)
    assert 0 <= split_bucket("p1", 1) < 1 and split_bucket("p1", 1) != split_bucket("p1", 2)


@settings(max_examples=60, deadline=None)
@given(
    existing=st.sets(st.text("abcdef0123456789", min_size=1, max_size=12), max_size=80),
    added=st.sets(st.text("abcdef0123456789-", min_size=1, max_size=12), max_size=40),
    removed_share=st.floats(0, 1),
    seed=st.integers(0, 2**31),
)
def test_adding_or_removing_products_moves_no_other_product(
    existing: set[str], added: set[str], removed_share: float, seed: int
) -> None:
    kwargs = {"seed": seed, "val_fraction": 0.15, "test_fraction": 0.15}

    def where(ids: list[str]) -> dict[str, str]:
        frame = pd.DataFrame({"product_id": ids, "root_category": ["x"] * len(ids)})
        return {i: name for name, part in split_products(frame, **kwargs).items() for i in part}

    before = where(sorted(existing))
    kept = sorted(existing)[int(len(existing) * removed_share) :]
    after = where(kept + sorted(added - existing))
    assert all(after[i] == before[i] for i in kept)


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
