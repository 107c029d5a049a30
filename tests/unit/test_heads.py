"""Each head can overfit a tiny batch (it learns at all) and exposes its embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import sparse

from marketplace.models.heads import (
    CombinedClassifier,
    MLPHead,
    SparseLinear,
    TextClassifier,
)
from marketplace.training.loop import FitConfig, fit, predict_proba

N, CLASSES = 32, 4
CONFIG = FitConfig(lr=0.02, weight_decay=0.0, epochs=60, patience=60, batch_size=16, seed=0)


@pytest.fixture
def batch() -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(N) % CLASSES
    rng = np.random.default_rng(0)
    tfidf = sparse.random(N, 50, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    return {
        "labels": labels,
        "image": torch.randn(N, 16, generator=g),
        "has_image": (torch.arange(N) % 3 != 0).float(),
        "text": torch.randn(N, 12, generator=g),
        "extra": torch.randn(N, 2, generator=g),
        "tfidf": tfidf,
    }


def _overfits(model: torch.nn.Module, inputs: list[object], labels: torch.Tensor) -> None:
    result = fit(model, (inputs, labels), (inputs, labels), CONFIG)
    accuracy = (predict_proba(model, inputs).argmax(1) == labels).float().mean().item()
    assert accuracy == 1.0, f"train accuracy {accuracy} after {len(result.history)} epochs"


def test_mlp_head_overfits(batch: dict) -> None:
    head = MLPHead(16, CLASSES, hidden_dim=32, dropout=0.0)
    _overfits(head, [batch["image"]], batch["labels"])
    assert head.embed(batch["image"]).shape == (N, 32)


def test_linear_head_when_hidden_is_zero(batch: dict) -> None:
    head = MLPHead(16, CLASSES, hidden_dim=0)
    assert head.embed(batch["image"]).shape == (N, 16)


def test_text_classifier_overfits(batch: dict) -> None:
    model = TextClassifier(50, 12, CLASSES, hidden_dim=32, dropout=0.0)
    _overfits(model, [batch["tfidf"], batch["text"]], batch["labels"])
    assert model.embed(batch["tfidf"], batch["text"]).shape == (N, 32)


def test_combined_classifier_overfits(batch: dict) -> None:
    model = CombinedClassifier(
        50, 16, 12, 2, CLASSES, hidden_dim=32, dropout=0.0, modality_dropout=0.0
    )
    inputs = [batch[k] for k in ("tfidf", "image", "has_image", "text", "extra")]
    _overfits(model, inputs, batch["labels"])
    assert model.embed(*inputs).shape == (N, 64)  # text and image hidden layers


def test_combined_ignores_the_text_when_there_is_none(batch: dict) -> None:
    model = CombinedClassifier(50, 16, 12, 2, CLASSES, hidden_dim=8, dropout=0.0).eval()
    no_text = torch.zeros(N)
    a = model(
        batch["tfidf"], batch["image"], batch["has_image"], batch["text"], batch["extra"], no_text
    )
    b = model(
        batch["tfidf"][::-1],
        batch["image"],
        batch["has_image"],
        torch.randn(N, 12),
        batch["extra"],
        no_text,
    )
    assert torch.equal(a, b)
    # Nothing but the price vote votes for a row with neither photo nor text.
    torch.testing.assert_close(
        model(
            batch["tfidf"], batch["image"], torch.zeros(N), batch["text"], batch["extra"], no_text
        ),
        model.price_head(batch["extra"]),
    )


def _branch_figures(model: CombinedClassifier, batch: dict) -> tuple[float, float, float]:
    """Photo-only cross-entropy and accuracy, text-only accuracy."""
    model.eval()
    with torch.no_grad():
        text_vote, _, alone, price_vote = model.votes(
            batch["tfidf"], batch["image"], batch["text"], batch["extra"]
        )
    labels = batch["labels"]
    image_only = alone + price_vote
    return (
        F.cross_entropy(image_only, labels).item(),
        (image_only.argmax(1) == labels).float().mean().item(),
        ((text_vote + price_vote).argmax(1) == labels).float().mean().item(),
    )


def test_per_branch_loss_makes_the_photo_stand_alone() -> None:
    """The defect of issue 11 in miniature: the text alone fits the labels, so trained on
    the sum only, the image branch learns next to nothing; the per-branch terms make it
    classify photos alone."""
    g = torch.Generator().manual_seed(0)
    n, classes = 64, 4
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, 16, generator=g) * 2
    batch = {
        "labels": labels,
        "image": centres[labels] + 3 * torch.randn(n, 16, generator=g),
        "has_image": torch.ones(n),
        "text": F.one_hot(labels, 12).float() * 20,  # the text gives the answer away
        "extra": torch.zeros(n, 2),
        "tfidf": sparse.csr_matrix((n, 50), dtype=np.float32),
    }
    inputs = [batch[k] for k in ("tfidf", "image", "has_image", "text", "extra")]
    config = FitConfig(lr=0.01, weight_decay=0.0, epochs=30, patience=30, batch_size=16, seed=0)
    results = {}
    for aux in (0.0, 1.0):
        torch.manual_seed(0)
        model = CombinedClassifier(
            50,
            16,
            12,
            2,
            classes,
            hidden_dim=16,
            dropout=0.0,
            modality_dropout=0.0,
            aux_weight=aux,
        )
        fit(model, (inputs, labels), (inputs, labels), config)
        results[aux] = _branch_figures(model, batch)
    (loss_sum_only, accuracy_sum_only, _), (loss, accuracy, text_accuracy) = results.values()
    assert text_accuracy == 1.0, results
    assert accuracy >= 0.95 and accuracy_sum_only < 0.9, results  # measured: 0.98 vs 0.84
    assert loss < loss_sum_only / 3, results  # measured: 0.15 vs 0.62


def test_combined_ignores_the_image_when_there_is_none(batch: dict) -> None:
    model = CombinedClassifier(50, 16, 12, 2, CLASSES, hidden_dim=8, dropout=0.0).eval()
    no_photo = torch.zeros(N)
    a = model(batch["tfidf"], batch["image"], no_photo, batch["text"], batch["extra"])
    b = model(batch["tfidf"], torch.randn(N, 16), no_photo, batch["text"], batch["extra"])
    assert torch.equal(a, b)


def test_sparse_linear_matches_dense(batch: dict) -> None:
    layer = SparseLinear(50, 3)
    torch.nn.init.normal_(layer.weight)
    dense = torch.from_numpy(batch["tfidf"].toarray())
    torch.testing.assert_close(layer(batch["tfidf"]), dense @ layer.weight + layer.bias)


def test_fit_is_repeatable(batch: dict) -> None:
    def train() -> torch.Tensor:
        torch.manual_seed(123)
        head = MLPHead(16, CLASSES, hidden_dim=8, dropout=0.3)
        config = FitConfig(lr=0.01, weight_decay=0.0, epochs=5, patience=5, batch_size=8, seed=7)
        fit(head, ([batch["image"]], batch["labels"]), ([batch["image"]], batch["labels"]), config)
        return predict_proba(head, [batch["image"]])

    torch.testing.assert_close(train(), train(), rtol=0, atol=0)


def test_early_stopping_keeps_the_best_epoch(batch: dict) -> None:
    head = MLPHead(16, CLASSES, hidden_dim=8)
    config = FitConfig(lr=0.01, weight_decay=0.0, epochs=50, patience=2, batch_size=8, seed=0)
    shuffled = batch["labels"][torch.randperm(N, generator=torch.Generator().manual_seed(1))]
    result = fit(head, ([batch["image"]], batch["labels"]), ([batch["image"]], shuffled), config)
    assert len(result.history) < 50
    best = max(h["val_accuracy"] for h in result.history)
    assert result.best_val_accuracy == best


def test_touched_rows_and_lazy_adam_match_torch_sparse_adam() -> None:
    """SparseLinear's training gradient + LazyAdam take the steps EmbeddingBag + SparseAdam
    would: same rows, same values."""
    import scipy.sparse as sp

    from marketplace.models.heads import SparseLinear
    from marketplace.training.optim import LazyAdam

    rng = np.random.default_rng(0)
    x = sp.random(64, 3000, density=0.01, format="csr", random_state=0, dtype=np.float32)
    labels = torch.from_numpy(rng.integers(0, 5, 64))
    batches = [np.sort(rng.choice(64, 16, replace=False)) for _ in range(15)]

    def train(reference: bool) -> torch.Tensor:
        torch.manual_seed(0)
        layer = SparseLinear(3000, 5)
        torch.nn.init.normal_(layer.weight)
        optimiser: torch.optim.Optimizer = (
            torch.optim.SparseAdam([layer.weight], lr=0.01)
            if reference
            else LazyAdam([layer.weight], lr=0.01)
        )
        for rows in batches:
            csr = x[rows]
            if reference:  # the plain sparse EmbeddingBag path
                out = layer.bag(
                    torch.from_numpy(csr.indices.astype(np.int64)),
                    torch.from_numpy(csr.indptr[:-1].astype(np.int64)),
                    per_sample_weights=torch.from_numpy(csr.data),
                )
            else:
                out = layer(csr) - layer.bias
            optimiser.zero_grad(set_to_none=True)
            F.cross_entropy(out, labels[rows]).backward()
            optimiser.step()
        return layer.weight.detach().clone()

    assert torch.allclose(train(reference=False), train(reference=True), atol=1e-6)


def test_lazy_adam_also_takes_gradients_with_repeated_rows() -> None:
    """An ``EmbeddingBag(sparse=True)`` gradient lists a row once per occurrence."""
    from marketplace.training.optim import LazyAdam

    def train(optimiser_class: type[torch.optim.Optimizer]) -> torch.Tensor:
        torch.manual_seed(0)
        bag = torch.nn.EmbeddingBag(50, 3, mode="sum", sparse=True)
        optimiser = optimiser_class([bag.weight], lr=0.05)
        for step in range(10):
            ids = torch.tensor([1, 2, 2, 7, 1, 9, step])  # rows 1 and 2 repeat
            loss = bag(ids, torch.tensor([0, 3])).pow(2).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            assert not bag.weight.grad.is_coalesced()
            optimiser.step()
        return bag.weight.detach().clone()

    assert torch.allclose(train(LazyAdam), train(torch.optim.SparseAdam), atol=1e-6)


def test_a_photo_alone_and_a_photo_beside_a_text_vote_through_their_own_layers(
    batch: dict,
) -> None:
    model = CombinedClassifier(50, 16, 12, 2, CLASSES, hidden_dim=8, aux_weight=1.0).eval()
    assert model.image_alone is not None
    torch.nn.init.zeros_(model.image_alone.weight)
    torch.nn.init.zeros_(model.image_alone.bias)
    inputs = [batch[k] for k in ("tfidf", "image", "has_image", "text", "extra")]
    photo_only = model(*inputs, torch.zeros(N))
    torch.testing.assert_close(photo_only, model.price_head(batch["extra"]))
    # Beside a text, the other layer votes (not zero here).
    with_text = model(*inputs, torch.ones(N))
    text_vote, beside, _, price = model.votes(
        batch["tfidf"], batch["image"], batch["text"], batch["extra"]
    )
    torch.testing.assert_close(
        with_text, price + text_vote + batch["has_image"].unsqueeze(1) * beside
    )
    # A model trained without the per-branch terms (older packages) has one layer.
    assert CombinedClassifier(50, 16, 12, 2, CLASSES).image_alone is None
