"""Optional encoder fine-tuning: trains only the unfrozen stages, lowers the loss, and the
fine-tuned tensors travel with the classifier folder (and only when fine-tuning is on)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.nn import functional as F

from marketplace.core.config import load_params
from marketplace.data.labels import LabelMap
from marketplace.features.embedding import EmbeddingSet
from marketplace.features.encoders import ImageEncoder, TextEncoder
from marketplace.features.tfidf import HashedTfidf, TfidfConfig
from marketplace.models.classifier import ClassifierPackage, ListingClassifier
from marketplace.models.heads import MLPHead, TextClassifier
from marketplace.training.finetune import IMAGE_PREFIX, TEXT_PREFIX, finetune_text, finetune_vision
from marketplace.training.inputs import SplitData
from marketplace.training.loop import predict_proba
from marketplace.training.train import train_classifier
from tests.helpers import PROJECT_ROOT
from tests.helpers.synthetic import COLOURS, SIZE, colour_photos, image_spec

PARAMS = load_params(PROJECT_ROOT / "params.yaml").train


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.fixture(scope="module")
def lite0() -> ImageEncoder:
    return ImageEncoder("efficientnet_lite0")


def test_vision_finetuning_trains_only_the_top_and_serves_the_same(
    lite0: ImageEncoder, tmp_path: Path
) -> None:
    ids, labels = colour_photos(tmp_path / "images", 8)
    part = SplitData([torch.zeros(8, 1280)], labels, ids)
    data = {"train": part, "val": part, "test": part}
    torch.manual_seed(0)
    head = MLPHead(1280, 2, hidden_dim=16, dropout=0.0)
    params = PARAMS.vision.model_copy(
        update={
            "finetune_blocks": 2,
            "finetune_lr": 0.003,
            "finetune_epochs": 6,
            "finetune_patience": 6,
            "finetune_batch_size": 4,
            "augment": True,
        }
    )
    encoder_before = _state(lite0)
    tuned = finetune_vision(head, data, tmp_path / "images", image_spec(), params, 0, encoder=lite0)
    pixels = tuned.inputs["train"][0]
    assert pixels.dtype == torch.uint8 and pixels.shape == (8, 3, SIZE, SIZE)

    history = tuned.result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert tuned.result.best_epoch > 0  # beat the starting point on val

    changed = _changed(encoder_before, _state(lite0))
    top = set(lite0.stage_state(2))
    assert changed and changed <= top  # the frozen stages did not move
    assert set(tuned.encoder_tensors) == {IMAGE_PREFIX + k for k in top}

    # The package serves the fine-tuned encoder: same probabilities as the trained module.
    package = ClassifierPackage(
        kind="vision",
        label_map=LabelMap(("Blue", "Red")),
        architecture="MLPHead",
        arguments={"in_dim": 1280, "num_classes": 2, "hidden_dim": 16, "dropout": 0.0},
        head=head.eval(),
        image_spec={**image_spec(), "finetuned": tuned.spec()},
        text_spec=None,
        tfidf=None,
        prices=None,
        info={},
        encoder_tensors=tuned.encoder_tensors,
    )
    photos = [(tmp_path / "images" / f"{i}.jpg").read_bytes() for i in ids]
    expected = predict_proba(tuned.model, [pixels]).numpy()
    served = ListingClassifier(package).predict_proba(images=photos)
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_text_finetuning_trains_only_the_last_layer() -> None:
    encoder = TextEncoder("minilm", max_tokens=16)
    texts = ["oak desk with drawers", "ps4 console and games"] * 4
    labels = torch.tensor([0, 1] * 4)
    tfidf = HashedTfidf(TfidfConfig(word_buckets=64, char_buckets=64)).fit(texts)
    part = SplitData(
        [tfidf.transform(texts), torch.zeros(8, 384)], labels, list(map(str, range(8)))
    )
    data = {"train": part, "val": part, "test": part}
    torch.manual_seed(0)
    head = TextClassifier(128, 384, 2, hidden_dim=8, dropout=0.0)
    params = PARAMS.text.model_copy(
        update={
            "finetune_layers": 1,
            "finetune_lr": 0.001,
            "finetune_epochs": 4,
            "finetune_patience": 4,
            "finetune_batch_size": 4,
        }
    )
    before = _state(encoder)
    split_texts = {name: texts for name in data}
    tuned = finetune_text(
        head, data, split_texts, {"encoder": "minilm"}, params, 0, encoder=encoder
    )
    history = tuned.result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    changed = _changed(before, _state(encoder))
    assert changed and all(k.startswith("transformer.encoder.layer.5.") for k in changed)
    assert all(
        k.startswith(TEXT_PREFIX + "transformer.encoder.layer.5.") for k in tuned.encoder_tensors
    )
    logits = tuned.model(*tuned.inputs["train"])
    assert F.cross_entropy(logits, labels).item() < history[0]["train_loss"]


def test_package_round_trips_encoder_overrides(lite0: ImageEncoder, tmp_path: Path) -> None:
    torch.manual_seed(0)
    head = MLPHead(1280, 3, hidden_dim=8, dropout=0.0).eval()
    overrides = {
        IMAGE_PREFIX + k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in lite0.stage_state(1).items()
    }
    spec = {**image_spec(bf16=True), "finetuned": {"stages": 1, "tensors": len(overrides)}}
    package = ClassifierPackage(
        kind="vision",
        label_map=LabelMap(("A", "B", "C")),
        architecture="MLPHead",
        arguments={"in_dim": 1280, "num_classes": 3, "hidden_dim": 8, "dropout": 0.0},
        head=head,
        image_spec=spec,
        text_spec=None,
        tfidf=None,
        prices=None,
        info={},
        encoder_tensors=overrides,
    )
    photos = []
    for colour in [*COLOURS, (30, 160, 30)]:
        buf = io.BytesIO()
        Image.new("RGB", (48, 40), colour).save(buf, "JPEG")
        photos.append(buf.getvalue())
    original = ListingClassifier(package).predict_proba(images=photos)
    package.save(tmp_path / "model")
    saved = load_file(str(tmp_path / "model" / "weights.safetensors"))
    assert {k for k in saved if not k.startswith("head.")} == set(overrides)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["image_encoder"]["finetuned"]["stages"] == 1
    loaded = ListingClassifier.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(images=photos), original)
    frozen = dataclasses.replace(package, encoder_tensors={})
    assert not np.allclose(ListingClassifier(frozen).predict_proba(images=photos), original)


def test_bad_encoder_overrides_are_refused(tmp_path: Path) -> None:
    package = ClassifierPackage(
        kind="vision",
        label_map=LabelMap(("A", "B")),
        architecture="MLPHead",
        arguments={"in_dim": 1280, "num_classes": 2, "hidden_dim": 0},
        head=MLPHead(1280, 2, hidden_dim=0),
        image_spec=image_spec(),
        text_spec=None,
        tfidf=None,
        prices=None,
        info={},
        encoder_tensors={"encoder.x": torch.zeros(1)},
    )
    with pytest.raises(ValueError, match="must start with"):
        package.save(tmp_path / "bad")
    package.encoder_tensors = {IMAGE_PREFIX + "no.such.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="does not have"):
        ListingClassifier(package)


def test_default_params_train_no_encoder_tensors(tmp_path: Path) -> None:
    """finetune_blocks: 0 (the default) leaves the package exactly as before."""
    assert PARAMS.vision.finetune_blocks == 0 and PARAMS.text.finetune_layers == 0
    rng = np.random.default_rng(0)
    n = 30
    listings = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(n)],
            "image_id": [f"i{i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "title": ["t"] * n,
            "description": ["d"] * n,
            "price": [1.0] * n,
        }
    )
    vectors = rng.normal(size=(n, 8)).astype(np.float32) + listings[["label"]].to_numpy() * 2
    images = EmbeddingSet(np.array([f"i{i}" for i in range(n)]), vectors, {"encoder": "x"})
    splits = {
        "train": [f"p{i}" for i in range(20)],
        "val": [f"p{i}" for i in range(20, 25)],
        "test": [f"p{i}" for i in range(25, 30)],
    }
    trained = train_classifier(
        "vision", listings, splits, LabelMap(("A", "B")), PARAMS, images=images
    )
    assert trained.package.encoder_tensors == {}
    assert "finetuned" not in trained.package.image_spec
    assert "finetune_best_epoch" not in trained.metrics
    trained.package.save(tmp_path / "model")
    saved = load_file(str(tmp_path / "model" / "weights.safetensors"))
    assert all(k.startswith("head.") for k in saved)
