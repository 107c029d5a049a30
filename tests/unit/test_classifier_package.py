"""A classifier folder round-trips: same head, same TF-IDF, same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from marketplace.data.labels import LabelMap
from marketplace.features.tfidf import HashedTfidf, TfidfConfig
from marketplace.mlops.registry import signature
from marketplace.models.classifier import ClassifierPackage, ListingClassifier
from marketplace.models.heads import TextClassifier

TEXTS = ["oak desk with drawers", "ps4 console and games", "baby pram, good condition"]


@pytest.fixture
def package() -> ClassifierPackage:
    tfidf = HashedTfidf(TfidfConfig(word_buckets=256, char_buckets=256)).fit(TEXTS)
    torch.manual_seed(0)
    arguments = {
        "tfidf_features": 512,
        "text_dim": 384,
        "num_classes": 3,
        "hidden_dim": 8,
        "dropout": 0.0,
    }
    head = TextClassifier(**arguments)
    torch.nn.init.normal_(head.wide.weight)
    return ClassifierPackage(
        kind="text",
        label_map=LabelMap(("Baby", "Games", "Home")),
        architecture="TextClassifier",
        arguments=arguments,
        head=head.eval(),
        image_spec=None,
        text_spec={
            "kind": "text",
            "encoder": "minilm",
            "dim": 384,
            "max_tokens": 32,
            "bf16": False,
            "text": "title. description",
        },
        tfidf=tfidf,
        prices=None,
        info={"metrics": {"test_accuracy": 0.5}},
    )


def test_round_trip_predicts_the_same(package: ClassifierPackage, tmp_path: Path) -> None:
    package.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json",
        "weights.safetensors",
    ]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["label_map"]["categories"] == ["Baby", "Games", "Home"]
    assert config["text_encoder"]["encoder"] == "minilm"
    original = ListingClassifier(package).predict_proba(texts=TEXTS)
    loaded = ListingClassifier.load(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict_proba(texts=TEXTS), original, atol=1e-6)
    np.testing.assert_array_equal(loaded.package.tfidf.idf, package.tfidf.idf)
    assert original.shape == (3, 3)
    np.testing.assert_allclose(original.sum(axis=1), 1.0, atol=1e-5)


def test_missing_input_is_a_clear_error(package: ClassifierPackage) -> None:
    with pytest.raises(ValueError, match="needs text"):
        ListingClassifier(package).predict_proba(texts=["ok", ""])


def test_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a classifier package"):
        ClassifierPackage.load(tmp_path)


def test_signatures_name_the_inputs() -> None:
    assert signature("vision").inputs.input_names() == ["image"]
    combined = signature("combined").inputs
    assert combined.input_names() == ["image", "text", "price"]
    assert not any(spec.required for spec in combined.inputs)
    assert signature("text").outputs.input_names() == ["category", "confidence", "probabilities"]


def test_calibration_travels_with_the_package_and_divides_the_logits(
    package: ClassifierPackage, tmp_path: Path
) -> None:
    raw = ListingClassifier(package).predict_proba(texts=TEXTS)
    package.calibration = {"text": 2.0}
    package.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["calibration"] == {
        "text": 2.0
    }
    loaded = ListingClassifier.load(tmp_path / "model")
    calibrated = loaded.predict_proba(texts=TEXTS)
    # softmax(z / 2) is softmax(z) ** 0.5, renormalised; the ranking is unchanged.
    expected = np.sqrt(raw) / np.sqrt(raw).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(calibrated, expected, atol=1e-5)
    np.testing.assert_array_equal(calibrated.argmax(1), raw.argmax(1))
