"""The promotion gate and rollback against a real sqlite MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from marketplace.core.config import PromoteParams
from marketplace.mlops.promotion import PromotionRefusedError, promote, rollback
from marketplace.mlops.registry import INDEX_TAG

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "gate-test"
GATE = PromoteParams(alias="production", metric="test_accuracy", tolerance=0.01, require_index=True)


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_client = MlflowClient(uri, uri)
    mlflow_client.create_registered_model(NAME)
    # Versions with (test accuracy, has an index): 2 is better, 3 slightly worse (within
    # tolerance), 4 much worse, 5 has no index.
    for accuracy, indexed in (
        (0.80, True),
        (0.85, True),
        (0.845, True),
        (0.70, True),
        (0.9, False),
    ):
        version = mlflow_client.create_model_version(NAME, source=str(tmp_path))
        mlflow_client.set_model_version_tag(NAME, version.version, "test_accuracy", str(accuracy))
        if indexed:
            mlflow_client.set_model_version_tag(NAME, version.version, INDEX_TAG, "100")
    return mlflow_client


def _alias(client: MlflowClient) -> str:
    return str(client.get_registered_model(NAME).aliases["production"])


def test_gate_promotes_better_and_within_tolerance_refuses_worse(client: MlflowClient) -> None:
    first = promote(client, NAME, "1", GATE)
    assert first.action == "promoted" and first.previous is None and _alias(client) == "1"
    assert promote(client, NAME, "2", GATE).previous == "1"
    assert promote(client, NAME, "3", GATE).action == "promoted"  # 0.845 vs 0.85: within 0.01
    with pytest.raises(PromotionRefusedError, match="worse than production"):
        promote(client, NAME, "4", GATE)
    assert _alias(client) == "3"
    assert promote(client, NAME, "3", GATE).action == "unchanged"

    tags = client.get_model_version(NAME, "3").tags
    assert tags["production.replaced"] == "2" and tags["production.forced"] == "false"
    assert tags["production.gate"].startswith("0.845 vs 0.85")
    assert "production.promoted_at" in tags


def test_force_skips_the_metric_gate_but_never_the_index(client: MlflowClient) -> None:
    promote(client, NAME, "2", GATE)
    result = promote(client, NAME, "4", GATE, force=True)
    assert result.forced and _alias(client) == "4"
    assert client.get_model_version(NAME, "4").tags["production.forced"] == "true"
    with pytest.raises(PromotionRefusedError, match="no FAISS index"):
        promote(client, NAME, "5", GATE, force=True)


def test_newest_version_by_default(client: MlflowClient) -> None:
    with pytest.raises(PromotionRefusedError, match="version 5 has no FAISS index"):
        promote(client, NAME, None, GATE)


def test_rollback_walks_back_the_history(client: MlflowClient) -> None:
    with pytest.raises(PromotionRefusedError, match="no 'production' alias"):
        rollback(client, NAME, GATE)
    for version in ("1", "2", "3"):
        promote(client, NAME, version, GATE)
    back = rollback(client, NAME, GATE)
    assert (back.action, back.version, back.previous) == ("rolled_back", "2", "3")
    assert _alias(client) == "2"
    assert "production.rolled_back_at" in client.get_model_version(NAME, "3").tags
    assert rollback(client, NAME, GATE).version == "1"
    with pytest.raises(PromotionRefusedError, match="no earlier production version"):
        rollback(client, NAME, GATE)
    history = client.get_registered_model(NAME).tags["production.history"]
    assert json.loads(history) == ["1"]


def _per_kind_version(client: MlflowClient, tmp_path: Path, **accuracy: float) -> str:
    version = client.create_model_version(NAME, source=str(tmp_path)).version
    tags = {INDEX_TAG: "100", "test_accuracy": str(accuracy.pop("all"))}
    tags |= {f"test_{kind}_accuracy": str(value) for kind, value in accuracy.items()}
    for key, value in tags.items():
        client.set_model_version_tag(NAME, version, key, value)
    return str(version)


def test_gate_compares_every_query_kind(client: MlflowClient, tmp_path: Path) -> None:
    production = _per_kind_version(
        client, tmp_path, all=0.85, image=0.56, text=0.84, image_text=0.86
    )
    promote(client, NAME, production, GATE)
    # Better on the mix and on text, but its photo-only answers collapsed to chance: the
    # average over kinds would pass it; the gate must not.
    collapsed = _per_kind_version(
        client, tmp_path, all=0.87, image=0.09, text=0.86, image_text=0.87
    )
    with pytest.raises(PromotionRefusedError) as refused:
        promote(client, NAME, collapsed, GATE)
    message = str(refused.value)
    assert "test_image_accuracy 0.0900" in message
    table = message.split("\n")[1:]
    assert table[0].split() == ["query", "kind", "challenger", "production", "change"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert rows["image"] == ["0.0900", "0.5600", "-0.4700"]
    assert rows["image+text"] == ["0.8700", "0.8600", "+0.0100"]
    assert set(rows) == {"all", "image", "text", "image+text"}
    assert _alias(client) == production

    # --force keeps its meaning; the per-kind comparison is recorded on the version.
    forced = promote(client, NAME, collapsed, GATE, force=True)
    assert forced.forced and _alias(client) == collapsed
    by_kind = json.loads(client.get_model_version(NAME, collapsed).tags["production.gate_by_kind"])
    assert by_kind["image"] == [0.09, 0.56]

    # A challenger within the tolerance on every kind passes, and says so kind by kind.
    promote(client, NAME, production, GATE, force=True)
    fine = _per_kind_version(client, tmp_path, all=0.85, image=0.555, text=0.845, image_text=0.86)
    result = promote(client, NAME, fine, GATE)
    assert result.action == "promoted" and "image+text" in result.describe()


def test_a_version_that_is_not_ready_is_never_promoted(
    client: MlflowClient, tmp_path: Path
) -> None:
    """A registration that did not complete (status other than READY, as the store records
    a failed one) is refused even with ``--force``; the alias stays where it was."""
    import sqlite3

    promote(client, NAME, "1", GATE)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute(
            "UPDATE model_versions SET status = 'FAILED_REGISTRATION', "
            "status_message = 'upload interrupted' WHERE name = ? AND version = 2",
            (NAME,),
        )
    with pytest.raises(PromotionRefusedError, match="FAILED_REGISTRATION, not READY"):
        promote(client, NAME, "2", GATE, force=True)
    assert _alias(client) == "1"


HOLDER = """
import sys, time
from mlflow import MlflowClient
from marketplace.mlops.promotion import alias_lock
client = MlflowClient(sys.argv[1], sys.argv[1])
with alias_lock(client, sys.argv[2], "production", lease_s=float(sys.argv[3])):
    print(time.time(), flush=True)
    time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_blocks_for_at_most_its_lease(client: MlflowClient) -> None:
    import signal
    import subprocess
    import sys
    import time

    lease = 3.0
    uri = client._registry_uri
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, uri, NAME, str(lease)], stdout=subprocess.PIPE, text=True
    )
    try:
        taken = float(holder.stdout.readline())  # type: ignore[union-attr]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with pytest.raises(PromotionRefusedError, match=rf"in progress \(.* pid {holder.pid}, hold"):
        promote(client, NAME, "1", GATE)
    while True:
        try:
            promote(client, NAME, "1", GATE)
            break
        except PromotionRefusedError:
            assert time.time() < taken + lease + 2, "still blocked after the dead holder's lease"
            time.sleep(0.1)
    assert time.time() >= taken + lease - 0.5  # held until its lease ran out, not before
    assert _alias(client) == "1"
    assert not client.search_model_versions(f"name = '{NAME}.production.lock'")  # cleared
