"""Train/val/test split: by product, stable, stratified by root category in expectation.

Splitting products (not image rows) keeps every photo of a listing in one split, so a
model is never tested on a photo of a product it trained on. A product's split depends
only on its id and the seed: ``SHA-256("<seed>:<product id>")`` is read as a number in
[0, 1) (its bucket) and cut by the ratios (test first, then val, the rest train). Adding,
removing or editing other products therefore never moves a product, so two versions
trained on exports a few days apart share every test product the older export had, and
the promotion gate can compare them on the same products. The bucket is independent of
the category, so every category is split in the given proportions in expectation (the
per-category counts are in the stage's report; at 13 categories of a few hundred products
each they are within a few products of the exact shares).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

SPLITS = ("train", "val", "test")


def split_bucket(product_id: str, seed: int) -> float:
    """Where a product falls in [0, 1): a function of its id and the seed only."""
    digest = hashlib.sha256(f"{seed}:{product_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(product_id: str, *, seed: int, val_fraction: float, test_fraction: float) -> str:
    """The split of one product id (``split_products`` applies it to each)."""
    bucket = split_bucket(product_id, seed)
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


def split_products(
    products: pd.DataFrame, *, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, list[str]]:
    """Assign each product id to one split (``split_of``: stable, see the module docstring).

    ``products`` needs a ``product_id`` column; rows repeating a product (one per image)
    are collapsed first. Ids within a split are sorted, so the files diff cleanly.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise ValueError("fractions must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must be < 1")
    assigned: dict[str, list[str]] = {name: [] for name in SPLITS}
    for product_id in products["product_id"].drop_duplicates():
        product_id = str(product_id)
        name = split_of(
            product_id, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
        )
        assigned[name].append(product_id)
    return {name: sorted(ids) for name, ids in assigned.items()}


def split_summary(
    products: pd.DataFrame, splits: Mapping[str, list[str]]
) -> tuple[dict[str, object], pd.DataFrame]:
    """Products per split (the stage's DVC metrics) and the per-category table (its report)."""
    per_product = products[["product_id", "root_category"]].drop_duplicates("product_id")
    category = per_product.set_index("product_id")["root_category"]
    table = (
        pd.DataFrame({name: category.loc[splits[name]].value_counts() for name in SPLITS})
        .fillna(0)
        .astype("int64")
        .sort_index()
    )
    table.index.name = "root_category"
    metrics: dict[str, object] = {
        name: {
            "products": len(splits[name]),
            "categories": int((table[name] > 0).sum()),
            "smallest_category": int(table[name].min()),
        }
        for name in SPLITS
    }
    return metrics, table.reset_index()


def write_split(splits: Mapping[str, list[str]], out_dir: Path) -> None:
    """One ``<split>.txt`` per split, one product id per line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        (out_dir / f"{name}.txt").write_text("".join(f"{i}\n" for i in splits[name]))


def read_split(out_dir: Path) -> dict[str, list[str]]:
    """Inverse of ``write_split``."""
    return {name: (out_dir / f"{name}.txt").read_text().split() for name in SPLITS}
