"""The tfidf stage's cached TF-IDF rows: built like the model's own featurisation, and
saved and loaded without loss, and refused for another split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marketplace.core.config import load_params
from marketplace.data.labels import LabelMap
from marketplace.features.embedding import EmbeddingSet
from marketplace.features.tfidf import HashedTfidf, TfidfConfig
from marketplace.training.inputs import TextFeatures, build_text_features, products_table
from marketplace.training.train import train_classifier
from tests.helpers import PROJECT_ROOT

CONFIG = TfidfConfig(word_buckets=128, char_buckets=256)
TITLES = ["oak dining table", "kids bike 16 inch", "ps4 console", "garden hose 20m", "sofa"]


def _listings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(len(TITLES))],
            "title": TITLES,
            "description": [f"{t}, collection only" for t in TITLES],
            "price": [10.0] * len(TITLES),
            "label": [0, 1, 0, 1, 0],
            "image_id": [None] * len(TITLES),
        }
    )


SPLITS = {"train": ["p0", "p1", "p2"], "val": ["p3"], "test": ["p4"]}


def test_rows_match_the_fitted_tfidf_and_have_unit_norm() -> None:
    products = products_table(_listings())
    features = build_text_features(products, CONFIG, SPLITS)
    for name, ids in SPLITS.items():
        expected = features.tfidf.transform(list(products.loc[ids, "text"]))
        np.testing.assert_allclose(features.rows[name].toarray(), expected.toarray(), rtol=1e-6)
        norms = np.sqrt(features.rows[name].multiply(features.rows[name]).sum(axis=1))
        np.testing.assert_allclose(np.asarray(norms).ravel(), 1.0, rtol=1e-5)
        assert features.ids[name] == ids
    # the IDF is fitted on the training texts only
    train_only = HashedTfidf(CONFIG).fit(list(products.loc[SPLITS["train"], "text"]))
    np.testing.assert_array_equal(features.tfidf.idf, train_only.idf)
    everything = HashedTfidf(CONFIG).fit(list(products["text"]))
    assert not np.array_equal(features.tfidf.idf, everything.idf)


def test_save_load_round_trip(tmp_path: Path) -> None:
    features = build_text_features(products_table(_listings()), CONFIG, SPLITS)
    features.save(tmp_path / "tfidf.npz")
    loaded = TextFeatures.load(tmp_path / "tfidf.npz")
    assert loaded.tfidf.config == CONFIG
    np.testing.assert_array_equal(loaded.tfidf.idf, features.tfidf.idf)
    for name in SPLITS:
        assert loaded.ids[name] == features.ids[name]
        assert (loaded.rows[name] != features.rows[name]).nnz == 0
    # the loaded hasher featurises new text exactly as the original
    text = ["a wooden table, collection only"]
    np.testing.assert_array_equal(
        loaded.tfidf.transform(text).toarray(), features.tfidf.transform(text).toarray()
    )


def test_rows_for_another_split_are_refused() -> None:
    features = build_text_features(products_table(_listings()), CONFIG, SPLITS)
    features.check_split(SPLITS)
    other = {**SPLITS, "val": ["p4"], "test": ["p3"]}
    with pytest.raises(ValueError, match=r"another val split.*dvc repro tfidf"):
        features.check_split(other)


def test_text_model_without_features_is_a_clear_error() -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    texts = EmbeddingSet(np.array(SPLITS["train"]), np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="needs texts and text_features"):
        train_classifier(
            "text", _listings(), SPLITS, LabelMap(("A", "B")), params.train, texts=texts
        )
