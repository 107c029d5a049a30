"""Per-kind evaluation pieces: log-loss and ECE, temperature scaling, query views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from marketplace.models.query import QUERY_KINDS, kind_slug, query_kind
from marketplace.training.calibration import fit_temperature
from marketplace.training.inputs import SplitData, concat_views, query_views
from marketplace.training.metrics import classification_metrics, expected_calibration_error


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_it_does_not() -> None:
    # 10 rows at confidence 0.8 of which 8 are right: perfectly calibrated.
    probabilities = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.0)
    # Same confidence, all wrong: the gap is the whole confidence.
    assert expected_calibration_error(probabilities, np.ones(10, int)) == pytest.approx(0.8)


def test_classification_metrics_include_log_loss_and_ece() -> None:
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    labels = np.array([0, 1, 1])
    m = classification_metrics(probabilities, labels, "test_image_")
    assert m["test_image_accuracy"] == pytest.approx(2 / 3)
    assert m["test_image_log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.3])))
    assert 0 <= m["test_image_ece"] <= 1 and m["test_image_n"] == 3
    empty = classification_metrics(np.zeros((0, 2)), np.zeros(0, int), "val_")
    assert np.isnan(empty["val_accuracy"]) and empty["val_n"] == 0


def test_temperature_scaling_recovers_the_temperature_that_made_the_labels() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=g) * 3
    # Labels drawn from softmax(logits / 2): the honest temperature is 2.
    labels = torch.multinomial((logits / 2).softmax(1), 1, generator=g).squeeze(1)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.0, rel=0.1)
    before = expected_calibration_error(logits.softmax(1).numpy(), labels.numpy())
    after = expected_calibration_error((logits / temperature).softmax(1).numpy(), labels.numpy())
    assert after < before / 3
    assert fit_temperature(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)) == 1.0


def test_query_kinds_and_slugs() -> None:
    assert query_kind(has_text=True, has_image=False) == "text"
    assert query_kind(has_text=False, has_image=True) == "image"
    assert query_kind(has_text=True, has_image=True) == "image+text"
    with pytest.raises(ValueError, match="photo, a text, or both"):
        query_kind(has_text=False, has_image=False)
    assert [kind_slug(k) for k in QUERY_KINDS] == ["image", "text", "image_text"]


def _combined_part() -> SplitData:
    n = 5
    has_image = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    return SplitData(
        [
            sparse.csr_matrix(np.eye(n, 8, dtype=np.float32)),
            torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) * has_image[:, None],
            has_image,
            torch.ones(n, 4),
            torch.tensor([[0.5, 0.0]] * n),
            torch.ones(n),
        ],
        torch.tensor([0, 1, 2, 0, 1]),
        ["a", "b", "c", "d", "e"],
    )


def test_query_views_show_each_kind_only_what_it_brings() -> None:
    views = query_views("combined", _combined_part())
    assert list(views) == ["image", "text", "image+text"]
    image, text, both = views["image"], views["text"], views["image+text"]
    assert image.ids == both.ids == ["a", "c", "e"] and text.ids == ["a", "b", "c", "d", "e"]
    # A photo alone: no text, no price (the missing flag), the photo itself.
    assert image.inputs[5].sum() == 0 and image.inputs[3].abs().sum() == 0
    assert torch.equal(image.inputs[4], torch.tensor([[0.0, 1.0]] * 3))
    assert torch.equal(image.inputs[1], both.inputs[1])
    # A text alone: the photo masked, the text and price kept.
    assert text.inputs[2].sum() == 0 and text.inputs[5].sum() == 5
    assert torch.equal(text.inputs[4], torch.tensor([[0.5, 0.0]] * 5))
    assert (both.inputs[0] != _combined_part().inputs[0][[0, 2, 4]]).nnz == 0

    joined = concat_views(list(views.values()))
    assert len(joined.labels) == 11 and joined.inputs[0].shape == (11, 8)
    assert joined.ids == image.ids + text.ids + both.ids


def test_vision_and_text_models_answer_one_kind() -> None:
    part = _combined_part()
    assert list(query_views("vision", part)) == ["image"]
    assert list(query_views("text", part)) == ["text"]
