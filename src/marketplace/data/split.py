"""Train/val/test split: by product, stratified by root category, seeded.

Splitting products (not image rows) keeps every photo of a listing in one split, so a
model is never tested on a photo of a product it trained on. Within each category the
products are shuffled with one seeded generator and cut by the ratios, so every split
has every category in proportion, and the same seed and data give the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def split_products(
    products: pd.DataFrame, *, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, list[str]]:
    """Assign each product id to one split.

    ``products`` needs ``product_id`` and ``root_category`` columns; rows repeating a
    product (one per image) are collapsed first. Per category of ``n`` products,
    ``round(n * test_fraction)`` go to test and ``round(n * val_fraction)`` to val,
    the rest to train. Ids within a split are sorted, so the files diff cleanly.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise ValueError("fractions must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must be < 1")
    per_product = products[["product_id", "root_category"]].drop_duplicates("product_id")
    rng = np.random.default_rng(seed)
    assigned: dict[str, list[str]] = {name: [] for name in SPLITS}
    for _, group in sorted(per_product.groupby("root_category"), key=lambda kv: kv[0]):
        ids = np.array(sorted(group["product_id"]))
        rng.shuffle(ids)
        n_test = round(len(ids) * test_fraction)
        n_val = round(len(ids) * val_fraction)
        assigned["test"].extend(ids[:n_test])
        assigned["val"].extend(ids[n_test : n_test + n_val])
        assigned["train"].extend(ids[n_test + n_val :])
    return {name: sorted(str(i) for i in ids) for name, ids in assigned.items()}


def split_summary(
    products: pd.DataFrame, splits: Mapping[str, list[str]]
) -> tuple[dict[str, object], pd.DataFrame]:
    """Products per split (the stage's DVC metrics) and the per-category table (its report)."""
    per_product = products[["product_id", "root_category"]].drop_duplicates("product_id")
    category = per_product.set_index("product_id")["root_category"]
    table = pd.DataFrame(
        {name: category.loc[splits[name]].value_counts() for name in SPLITS}
    ).fillna(0).astype("int64").sort_index()
    table.index.name = "root_category"
    metrics: dict[str, object] = {
        name: {"products": len(splits[name]), "categories": int((table[name] > 0).sum()),
               "smallest_category": int(table[name].min())}
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
