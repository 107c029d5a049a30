"""Warm-started heads: a head starts from an earlier package's weights only when they mean
the same thing (same architecture, categories, encoders and TF-IDF buckets), trains at most
``warm_epochs`` epochs, and says where it started."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from marketplace.core.config import load_params
from marketplace.data.labels import LabelMap
from marketplace.features.embedding import EmbeddingSet
from marketplace.features.tfidf import TfidfConfig
from marketplace.training.inputs import build_text_features, products_table
from marketplace.training.train import (
    TrainedModel,
    WarmStart,
    train_classifier,
    warm_start_mismatch,
)
from tests.helpers import PROJECT_ROOT
from tests.helpers.tiny import WORDS, listing

PARAMS = load_params(PROJECT_ROOT / "params.yaml")
CATEGORIES = tuple(WORDS)


def _world() -> tuple[pd.DataFrame, dict[str, list[str]], EmbeddingSet, EmbeddingSet]:
    """52 listings (13 categories x 4, every other one with a photo) and vectors that carry
    their category, so that a head learns something in a few epochs."""
    rng = np.random.default_rng(0)
    rows, image_ids = [], []
    for label, words in enumerate(WORDS.values()):
        for i in range(4):
            n = label * 4 + i
            image_id = f"img{n:03d}" if n % 2 else None
            image_ids += [image_id] if image_id else []
            rows.append(listing(f"p{n:03d}", f"{words} {n}", words, 10.0 + n, label, image_id))
    listings = pd.DataFrame(rows)
    ids = list(listings["product_id"])
    splits = {"train": ids[0::4] + ids[1::4], "val": ids[2::4], "test": ids[3::4]}

    def vectors(labels: list[int], dim: int) -> np.ndarray:
        out = rng.normal(size=(len(labels), dim)).astype(np.float32)
        out[np.arange(len(labels)), labels] += 3.0
        return out

    by_image = {r["image_id"]: r["label"] for r in rows if r["image_id"]}
    images = EmbeddingSet(
        np.array(image_ids), vectors([by_image[i] for i in image_ids], 16), {"encoder": "a"}
    )
    texts = EmbeddingSet(
        np.array(ids), vectors(list(listings["label"]), 16), {"encoder": "b", "max_tokens": 8}
    )
    return listings, splits, images, texts


WORLD = _world()


def _train(
    *, seed: int, warm: WarmStart | None = None, categories=CATEGORIES, **combined: object
) -> TrainedModel:
    listings, splits, images, texts = WORLD
    head = PARAMS.train.combined.model_copy(update={"hidden_dim": 16, "epochs": 8, **combined})
    train = PARAMS.train.model_copy(update={"seed": seed, "combined": head})
    features = build_text_features(
        products_table(listings), TfidfConfig(word_buckets=64, char_buckets=64), splits
    )
    return train_classifier(
        "combined",
        listings,
        splits,
        LabelMap(categories),
        train,
        images=images,
        texts=texts,
        text_features=features,
        warm_start=warm,
    )


@pytest.fixture(scope="module")
def previous() -> TrainedModel:
    return _train(seed=0)


def test_a_warm_start_continues_from_the_given_weights(previous: TrainedModel) -> None:
    # lr ~ 0: whatever the one epoch does, the weights stay those it started from
    warm = _train(
        seed=1, warm=WarmStart(previous.package, "v1"), warm_epochs=1, lr=1e-12, patience=1
    )
    assert warm.warm_start == "from v1"
    assert warm.metrics["warm_started"] == 1.0
    assert len(warm.history) == 1
    assert warm.package.info["warm_start"] == "from v1"
    before = previous.package.head.state_dict()
    for name, tensor in warm.package.head.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=1e-6, msg=name)


def test_a_cold_start_does_not_match_the_previous_weights(previous: TrainedModel) -> None:
    cold = _train(seed=1)
    assert cold.warm_start == "cold" and cold.metrics["warm_started"] == 0.0
    after = cold.package.head.state_dict()
    assert any(not torch.equal(t, after[n]) for n, t in previous.package.head.state_dict().items())


def test_warm_epochs_zero_ignores_the_warm_start(previous: TrainedModel) -> None:
    trained = _train(seed=0, warm=WarmStart(previous.package, "v1"), warm_epochs=0)
    assert trained.warm_start == "cold"
    # the same run as the cold one with the same seed
    for name, tensor in trained.package.head.state_dict().items():
        torch.testing.assert_close(tensor, previous.package.head.state_dict()[name])


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"hidden_dim": 8}, "its sizes or settings differ"),
        ({"categories": tuple(reversed(CATEGORIES))}, "its categories differ"),
    ],
)
def test_weights_that_mean_something_else_train_cold(
    previous: TrainedModel, change: dict[str, object], why: str
) -> None:
    trained = _train(seed=1, warm=WarmStart(previous.package, "v1"), warm_epochs=2, **change)
    assert trained.warm_start == f"cold: v1 does not fit ({why})"
    assert trained.metrics["warm_started"] == 0.0


def test_a_fine_tuned_encoder_or_other_inputs_do_not_fit(previous: TrainedModel) -> None:
    package = previous.package
    head = package.head
    args = (
        "combined",
        head,
        package.arguments,
        package.label_map,
        package.image_spec,
        package.text_spec,
        package.tfidf,
    )
    assert warm_start_mismatch(package, *args) is None
    tuned = dataclasses.replace(package, encoder_tensors={"image_encoder.w": torch.zeros(1)})
    assert warm_start_mismatch(tuned, *args) == "its encoder was fine-tuned"
    other_encoder = dataclasses.replace(package, image_spec={"encoder": "another"})
    assert warm_start_mismatch(other_encoder, *args) == "its image encoder differs"
    assert warm_start_mismatch(package, "text", *args[1:]) == "it is a combined model"
    other_tfidf = (*args[:-1], None)
    assert warm_start_mismatch(package, *other_tfidf) == "its TF-IDF buckets differ"
