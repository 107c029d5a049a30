"""Training records each test product's outcome per query kind (what the gate compares)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from marketplace.training.inputs import SplitData
from marketplace.training.train import evaluate_by_kind


def test_outcomes_per_product_match_the_accuracy() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    parts = {
        name: SplitData(
            [torch.randn(n, 4)], torch.randint(0, 3, (n,)), [f"{name}{i}" for i in range(n)]
        )
        for name, n in (("val", 12), ("test", 9))
    }
    metrics: dict[str, float] = {}
    outcomes: dict[str, pd.DataFrame] = {}
    evaluate_by_kind("vision", model, parts, 3, metrics, outcomes=outcomes)
    test = outcomes["test"]
    assert list(test.columns) == ["product_id", "kind", "correct"]
    assert set(test["kind"]) == {"all", "image"}
    for kind, tag in (("all", "test_accuracy"), ("image", "test_image_accuracy")):
        rows = test[test["kind"] == kind]
        assert rows["product_id"].tolist() == parts["test"].ids
        assert rows["correct"].mean() == pytest.approx(metrics[tag])
