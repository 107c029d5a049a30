"""Model inputs for the three classifiers, assembled from the pipeline's outputs.

One place turns cleaned listings, the split and the cached embeddings into the tensors
each head trains on, so the vision, text and combined models see consistent data:

- vision: one row per cleaned image (its product's label), image embedding;
- text: one row per product, hashed TF-IDF + sentence embedding;
- combined: one row per product, mean of its image embeddings (zeros and a flag when it
  has no photo), TF-IDF, sentence embedding and price features.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from marketplace.core.io import write_npz
from marketplace.data.split import SPLITS
from marketplace.features.embedding import EmbeddingSet
from marketplace.features.preprocessing import listing_text
from marketplace.features.tfidf import HashedTfidf, TfidfConfig
from marketplace.models.price import PriceScaler


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


@dataclass
class TextFeatures:
    """Hashed TF-IDF rows of every split, with the fitted ``HashedTfidf`` that made them.

    Built once by the ``tfidf`` stage and shared by ``train_text`` and ``train_combined``:
    hashing character n-grams is the slowest part of featurisation (~3 s on the real
    export), and it depends only on the texts, the split and the ``tfidf`` params, not on
    any head's hyper-parameters, so a head-only change need not redo it.
    """

    tfidf: HashedTfidf
    rows: dict[str, sparse.csr_matrix]  # split -> [n_products, n_features], unit L2 rows
    ids: dict[str, list[str]]  # split -> product ids, row-aligned

    def check_split(self, splits: dict[str, list[str]]) -> None:
        """``ValueError`` unless the rows were made for exactly these product ids."""
        for name in SPLITS:
            if list(self.ids[name]) != list(splits[name]):
                raise ValueError(
                    f"TF-IDF features were built for another {name} split "
                    f"({len(self.ids[name])} products, expected {len(splits[name])}): "
                    "rerun the tfidf stage (dvc repro tfidf)"
                )

    def save(self, path: Path) -> None:
        """One ``.npz``: the hashing config, the IDF weights and each split's CSR arrays."""
        assert self.tfidf.idf is not None
        arrays: dict[str, np.ndarray] = {
            "config": np.array(json.dumps(self.tfidf.config.to_dict(), sort_keys=True)),
            "idf": self.tfidf.idf,
        }
        for name in SPLITS:
            rows = self.rows[name]
            arrays[f"{name}_ids"] = np.array(self.ids[name], dtype=str)
            arrays[f"{name}_data"] = rows.data.astype(np.float32)
            arrays[f"{name}_indices"] = rows.indices.astype(np.int32)
            arrays[f"{name}_indptr"] = rows.indptr.astype(np.int64)
        write_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> TextFeatures:
        with np.load(path, allow_pickle=False) as data:
            tfidf = HashedTfidf(
                TfidfConfig.from_dict(json.loads(str(data["config"]))), idf=data["idf"]
            )
            rows, ids = {}, {}
            for name in SPLITS:
                ids[name] = [str(i) for i in data[f"{name}_ids"]]
                rows[name] = sparse.csr_matrix(
                    (data[f"{name}_data"], data[f"{name}_indices"], data[f"{name}_indptr"]),
                    shape=(len(ids[name]), tfidf.config.n_features),
                )
        return cls(tfidf, rows, ids)


def build_text_features(
    products: pd.DataFrame, config: TfidfConfig, splits: dict[str, list[str]]
) -> TextFeatures:
    """Fit a ``HashedTfidf`` on the training products' texts; their TF-IDF rows per split.

    The training texts are hashed once (``fit_transform``), not once to fit and again to
    transform: hashing character n-grams is most of the featurisation time.
    """
    tfidf = HashedTfidf(config)
    rows = {"train": tfidf.fit_transform(list(products.loc[splits["train"], "text"]))}
    for name in SPLITS:
        if name != "train":
            rows[name] = tfidf.transform(list(products.loc[splits[name], "text"]))
    return TextFeatures(tfidf, rows, {name: list(splits[name]) for name in SPLITS})


def text_data(
    products: pd.DataFrame,
    texts: EmbeddingSet,
    rows: dict[str, Any],
    splits: dict[str, list[str]],
) -> dict[str, SplitData]:
    """Per split: hashed TF-IDF rows (``TextFeatures.rows``) and sentence embeddings."""
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
                torch.ones(len(part)),  # has_text: every catalogue product has one
            ],
            torch.tensor(part["label"].to_numpy(), dtype=torch.long),
            list(part.index),
        )
    return out


def query_views(model_kind: str, part: SplitData) -> dict[str, SplitData]:
    """The split as each query kind the model answers sees it (``models.query``).

    The vision model answers photos and the text model texts, as they are. The combined
    model answers all three: ``image`` (the products with a photo, text masked out and
    the price unknown: a photo is all the query brings), ``text`` (every product, photo
    masked out) and ``image+text`` (the products with a photo, everything).
    """
    if model_kind == "vision":
        return {"image": part}
    if model_kind == "text":
        return {"text": part}
    tfidf, image, has_image, text, extra, has_text = part.inputs
    photo = torch.nonzero(has_image > 0).flatten()
    missing_price = torch.from_numpy(PriceScaler.missing(len(photo)))
    labels, ids = part.labels, part.ids
    return {
        "image": SplitData(
            [
                tfidf[photo.numpy()],
                image[photo],
                has_image[photo],
                torch.zeros_like(text[photo]),
                missing_price,
                torch.zeros(len(photo)),
            ],
            labels[photo],
            [ids[i] for i in photo.tolist()],
        ),
        "text": SplitData(
            [tfidf, torch.zeros_like(image), torch.zeros_like(has_image), text, extra, has_text],
            labels,
            ids,
        ),
        "image+text": SplitData(
            [
                x[photo.numpy()] if not isinstance(x, torch.Tensor) else x[photo]
                for x in part.inputs
            ],
            labels[photo],
            [ids[i] for i in photo.tolist()],
        ),
    }


def concat_views(views: Sequence[SplitData]) -> SplitData:
    """Row-wise concatenation of views of one model's inputs (sparse rows stacked)."""
    if len(views) == 1:
        return views[0]
    inputs = []
    for column in zip(*(v.inputs for v in views), strict=True):
        if isinstance(column[0], torch.Tensor):
            inputs.append(torch.cat(list(column)))
        else:
            inputs.append(sparse.vstack(list(column), format="csr"))
    return SplitData(
        inputs, torch.cat([v.labels for v in views]), [i for v in views for i in v.ids]
    )
