"""The promotion gate scores challenger and production on the test products they share.

Versions of a real sqlite MLflow registry carry, as their training logs them, the per-product
test outcomes (a CSV in their run, named by the ``test_outcomes`` tag). Their own
``test_accuracy`` tags are measured on different test sets; the gate must decide on the
shared products instead, and fall back to the tags only for versions without outcomes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from marketplace.core.config import PromoteParams
from marketplace.mlops.promotion import PromotionRefusedError, promote, shared_gate_rows
from marketplace.mlops.registry import INDEX_TAG, OUTCOMES_ARTIFACT, OUTCOMES_TAG

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "shared-gate"
GATE = PromoteParams(alias="production", metric="test_accuracy", tolerance=0.01, require_index=True)


def outcomes(correct: dict[str, int], photo: set[str]) -> pd.DataFrame:
    """Rows as training logs them: ``all`` and ``text`` for every product, the photo kinds
    for products with a photo (here the same correctness for every kind)."""
    rows = []
    for product_id, ok in correct.items():
        kinds = ["all", "text"] + (["image", "image+text"] if product_id in photo else [])
        rows += [{"product_id": product_id, "kind": k, "correct": ok} for k in kinds]
    return pd.DataFrame(rows)


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_client = MlflowClient(uri, uri)
    mlflow_client.create_registered_model(NAME)
    return mlflow_client


def register(
    client: MlflowClient, tmp_path: Path, tag_accuracy: float, table: pd.DataFrame | None
) -> str:
    version = client.create_model_version(NAME, source=str(tmp_path)).version
    client.set_model_version_tag(NAME, version, "test_accuracy", str(tag_accuracy))
    client.set_model_version_tag(NAME, version, INDEX_TAG, "10")
    if table is not None:
        experiment = client.get_experiment_by_name("gate") or client.get_experiment(
            client.create_experiment("gate", artifact_location=(tmp_path / "art").as_uri())
        )
        run = client.create_run(experiment.experiment_id)
        local = tmp_path / f"v{version}" / Path(OUTCOMES_ARTIFACT).name
        local.parent.mkdir()
        table.to_csv(local, index=False)
        client.log_artifact(run.info.run_id, str(local), str(Path(OUTCOMES_ARTIFACT).parent))
        uri = f"runs:/{run.info.run_id}/{OUTCOMES_ARTIFACT}"
        client.set_model_version_tag(NAME, version, OUTCOMES_TAG, uri)
    return str(version)


def test_gate_compares_on_the_shared_test_products(client: MlflowClient, tmp_path: Path) -> None:
    photo = {f"p{i}" for i in range(0, 20, 2)}
    # Production: test products p0-p9, p0-p7 right (its own tag: 0.80).
    production = {f"p{i}": int(i < 8) for i in range(10)}
    assert (
        promote(
            client, NAME, register(client, tmp_path, 0.80, outcomes(production, photo)), GATE
        ).action
        == "promoted"
    )
    # A challenger whose own test set (p5-p14) is harder: its tag says 0.60, but on the
    # shared products p5-p9 it is as good as production (p5-p7 right, p8-p9 wrong).
    harder = {f"p{i}": int(i < 8) for i in range(5, 15)}
    v2 = register(client, tmp_path, 0.60, outcomes(harder, photo))
    result = promote(client, NAME, v2, GATE)
    assert result.action == "promoted"
    assert (result.value, result.previous_value) == (0.6, 0.6)  # 3 of 5 shared, both
    tags = client.get_model_version(NAME, v2).tags
    assert tags["production.gate_basis"] == "the 5 test products both versions share"
    assert tags["production.gate"].startswith("0.6 vs 0.6")
    # A challenger whose tag (0.95, on easier products) beats production, but which gets
    # every shared product (p5-p14) wrong, where production got p5-p7 right: refused.
    easier = {f"p{i}": int(i >= 15) for i in range(5, 45)}
    v3 = register(client, tmp_path, 0.95, outcomes(easier, photo))
    with pytest.raises(PromotionRefusedError, match="test products both versions share"):
        promote(client, NAME, v3, GATE)
    rows, shared = shared_gate_rows(  # type: ignore[misc]
        client,
        client.get_model_version(NAME, v3),
        client.get_model_version(NAME, v2),
        "test_accuracy",
    )
    assert shared == 10  # p5-p14
    assert {row.kind for row in rows} == {"all", "text", "image", "image+text"}
    assert rows[0].challenger == 0.0 and rows[0].production == pytest.approx(0.3)
    assert str(client.get_registered_model(NAME).aliases["production"]) == v2


def test_versions_without_outcomes_fall_back_to_their_tags(
    client: MlflowClient, tmp_path: Path
) -> None:
    v1 = register(client, tmp_path, 0.80, None)
    promote(client, NAME, v1, GATE)
    v2 = register(client, tmp_path, 0.70, outcomes({"p1": 1}, set()))  # production has none
    with pytest.raises(PromotionRefusedError, match="own test set"):
        promote(client, NAME, v2, GATE)
    v3 = register(client, tmp_path, 0.81, None)
    assert promote(client, NAME, v3, GATE).action == "promoted"
    assert "own test set" in client.get_model_version(NAME, v3).tags["production.gate_basis"]


def test_unreadable_outcomes_refuse(client: MlflowClient, tmp_path: Path) -> None:
    promote(client, NAME, register(client, tmp_path, 0.8, outcomes({"p1": 1}, set())), GATE)
    v2 = register(client, tmp_path, 0.9, None)
    client.set_model_version_tag(NAME, v2, OUTCOMES_TAG, "runs:/0123456789abcdef/missing.csv")
    with pytest.raises(PromotionRefusedError, match="cannot read its test outcomes"):
        promote(client, NAME, v2, GATE)
