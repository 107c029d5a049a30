"""Model inputs for the three classifiers, assembled from the pipeline's outputs.

One place turns cleaned listings, the split and the cached embeddings into the tensors
each head trains on, so the vision, text and combined models see consistent data:

- vision: one row per cleaned image (its product's label), image embedding;
- text: one row per product, hashed TF-IDF + sentence embedding;
- combined: one row per product, mean of its image embeddings (zeros and a flag when it
  has no photo), TF-IDF, sentence embedding and price features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from marketplace.data.split import SPLITS
from marketplace.models.embedding import EmbeddingSet
from marketplace.models.tfidf import HashedTfidf
from marketplace.preprocessing import listing_text


@dataclass(frozen=True)
class PriceScaler:
    """log1p(price) standardised with training statistics; missing prices get a flag."""

    mean: float
    std: float

    @classmethod
    def fit(cls, prices: Sequence[float | None]) -> PriceScaler:
        logs = np.log1p(np.array([p for p in prices if p is not None and not math.isnan(p)]))
        if len(logs) == 0:
            return cls(0.0, 1.0)
        return cls(float(logs.mean()), float(logs.std() or 1.0))

    def transform(self, prices: Sequence[float | None]) -> np.ndarray:
        """``[N, 2]``: standardised log price (0 when missing), and a missing flag."""
        out = np.zeros((len(prices), 2), dtype=np.float32)
        for i, price in enumerate(prices):
            if price is None or math.isnan(price) or price < 0:
                out[i, 1] = 1.0
            else:
                out[i, 0] = (math.log1p(price) - self.mean) / self.std
        return out


@dataclass
class SplitData:
    """Inputs (row-aligned) and labels of one split for one model."""

    inputs: list[Any]
    labels: torch.Tensor
    ids: list[str]


def products_table(listings: pd.DataFrame) -> pd.DataFrame:
    """One row per product with its text and the list of its image ids."""
    images = listings.dropna(subset=["image_id"]).groupby("product_id")["image_id"].agg(list)
    products = listings.drop_duplicates("product_id").set_index("product_id")
    products = products.drop(columns=["image_id", "image_ref", "image_created"], errors="ignore")
    products["image_ids"] = images.reindex(products.index).apply(
        lambda v: v if isinstance(v, list) else []
    )
    products["text"] = [
        listing_text(t, d) for t, d in zip(products["title"], products["description"], strict=True)
    ]
    return products


def vision_data(
    listings: pd.DataFrame, images: EmbeddingSet, splits: dict[str, list[str]]
) -> dict[str, SplitData]:
    """Per split: every cleaned image of its products, with the image embedding."""
    rows = listings.dropna(subset=["image_id"])
    out = {}
    for name in SPLITS:
        part = rows[rows["product_id"].isin(set(splits[name]))]
        vectors, found = images.lookup(list(part["image_id"]))
        part = part[found]
        out[name] = SplitData(
            [torch.from_numpy(vectors[found])],
            torch.tensor(part["label"].to_numpy(), dtype=torch.long),
            list(part["image_id"]),
        )
    return out


def product_image_vectors(
    products: pd.DataFrame, images: EmbeddingSet
) -> tuple[np.ndarray, np.ndarray]:
    """Mean image embedding per product (zeros without photos) and a has-image flag."""
    owners = np.repeat(np.arange(len(products)), [len(ids) for ids in products["image_ids"]])
    vectors, found = images.lookup([i for ids in products["image_ids"] for i in ids])
    sums = np.zeros((len(products), images.dim), dtype=np.float32)
    np.add.at(sums, owners[found], vectors[found])
    counts = np.bincount(owners[found], minlength=len(products)).astype(np.float32)
    return sums / np.maximum(counts, 1)[:, None], (counts > 0).astype(np.float32)


def tfidf_rows(
    products: pd.DataFrame, tfidf: HashedTfidf, splits: dict[str, list[str]]
) -> dict[str, Any]:
    """Fit ``tfidf`` on the training products' texts; their TF-IDF rows per split.

    The training texts are hashed once (``fit_transform``), not once to fit and again to
    transform: hashing character n-grams is most of the featurisation time.
    """
    out = {"train": tfidf.fit_transform(list(products.loc[splits["train"], "text"]))}
    for name in SPLITS:
        if name != "train":
            out[name] = tfidf.transform(list(products.loc[splits[name], "text"]))
    return out


def text_data(
    products: pd.DataFrame,
    texts: EmbeddingSet,
    rows: dict[str, Any],
    splits: dict[str, list[str]],
) -> dict[str, SplitData]:
    """Per split: hashed TF-IDF rows (``tfidf_rows``) and sentence embeddings of each product."""
    out = {}
    for name in SPLITS:
        part = products.loc[splits[name]]
        vectors, _ = texts.lookup(list(part.index))
        out[name] = SplitData(
            [rows[name], torch.from_numpy(vectors)],
            torch.tensor(part["label"].to_numpy(), dtype=torch.long),
            list(part.index),
        )
    return out


def combined_data(
    products: pd.DataFrame,
    images: EmbeddingSet,
    texts: EmbeddingSet,
    rows: dict[str, Any],
    prices: PriceScaler,
    splits: dict[str, list[str]],
) -> dict[str, SplitData]:
    """Per split: TF-IDF, product image vector + flag, sentence embedding, price features."""
    out = {}
    for name in SPLITS:
        part = products.loc[splits[name]]
        image_vectors, has_image = product_image_vectors(part, images)
        text_vectors, _ = texts.lookup(list(part.index))
        extra = prices.transform(list(part["price"]))
        out[name] = SplitData(
            [
                rows[name],
                torch.from_numpy(image_vectors),
                torch.from_numpy(has_image),
                torch.from_numpy(text_vectors),
                torch.from_numpy(extra),
            ],
            torch.tensor(part["label"].to_numpy(), dtype=torch.long),
            list(part.index),
        )
    return out
