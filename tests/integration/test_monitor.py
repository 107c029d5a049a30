"""The drift monitor, live evidence and model cards on a small real world.

``tests/helpers/monitor.py`` trains a combined model on a synthetic catalogue with the real
encoders and replays listings into prediction-log rows as serving writes them. At the
default thresholds (params.yaml), a replay of val raises no alert and a synthetic shift
(one category's listings only; grey photos) does, on 500 requests each.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from marketplace.core.config import PromoteLiveParams, PromoteParams
from marketplace.core.db import engine
from marketplace.mlops import log_schema
from marketplace.mlops.evidence import agreement, live_accuracy
from marketplace.mlops.monitor import compare, main
from marketplace.mlops.promotion import PromotionRefusedError, promote
from marketplace.mlops.registry import INDEX_TAG, log_trained
from marketplace.mlops.tracking import setup_tracking
from tests.helpers import PROJECT_ROOT
from tests.helpers.monitor import (
    World,
    build_world,
    grey_photos,
    log_rows,
    one_category,
    val_replay,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PARAMS = PROJECT_ROOT / "params.yaml"
NAME = "marketplace-combined"  # registry.combined: what the monitor command watches


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


def _window(world: World, requests) -> pd.DataFrame:
    return pd.DataFrame(log_rows(world, requests, model_name=NAME, model_version="1", start=0))


def test_val_replay_is_quiet_and_shifts_alert(world: World) -> None:
    params = world.params.monitor
    quiet = compare(world.reference, _window(world, val_replay(world, 500, seed=1)), params)
    assert quiet.alerts == [], quiet.alerts
    judged = {k.kind for k in quiet.kinds if k.judged}
    assert judged == {"text", "image+text"}  # val as it comes: no photo-only listings

    shifted = compare(world.reference, _window(world, one_category(world, 500, seed=2)), params)
    alerts = " ".join(shifted.alerts)
    assert "category_distance" in alerts and "embedding_auc:text" in alerts

    grey = compare(world.reference, _window(world, grey_photos(world, 500, seed=3)), params)
    assert any(a.startswith("image+text: embedding_auc:image") for a in grey.alerts)
    assert not any("embedding_auc:text" in a for a in grey.alerts)  # the texts did not move


def _insert(url: str, rows: list[dict], feedback: list[dict] | None = None) -> None:
    db = engine(url)
    log_schema.create(db)
    with db.begin() as connection:
        connection.execute(sa.insert(log_schema.predictions), rows)
        if feedback:
            connection.execute(sa.insert(log_schema.feedback), feedback)
    db.dispose()


def test_monitor_command_reports_logs_and_exits_1_on_drift(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    setup_tracking(tmp_path)
    model_dir = tmp_path / "model"
    world.trained.package.save(model_dir)
    card = {"data": {"products": 520, "photos": 410}, "params": {"train.seed": "0"}}
    with mlflow.start_run(run_name="combined"):
        version = log_trained(
            world.trained,
            model_dir,
            [],
            NAME,
            pd.DataFrame([{"text": "a sofa", "price": 20.0}]),
            "train_combined",
            reference=world.reference,
            card=card,
        )
    client = MlflowClient()
    client.set_registered_model_alias(NAME, "production", version)
    registered = client.get_model_version(NAME, version).description
    assert "## Test metrics per query kind" in registered and "| photo only |" in registered
    assert "products: 520" in registered and "## Runs" in registered

    now = time.time()
    quiet_url = f"sqlite:///{tmp_path / 'quiet.db'}"
    rows = log_rows(
        world, val_replay(world, 300, seed=4), model_name=NAME, model_version=version,
        start=now - 600, step=1.0,
    )  # fmt: skip
    feedback = [  # the seller keeps the suggestion on every other answer
        {"request_id": r["request_id"], "ts": r["ts"] + 5, "category": r["category"]}
        for r in rows[::2]
    ]
    _insert(quiet_url, rows, feedback)
    out = tmp_path / "quiet"
    argv = ["--params", str(PARAMS), "--db", quiet_url, "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "monitor.json").read_text())
    assert summary["alert"] is False and summary["n"] == 300
    live = summary["live_accuracy"]  # per version, role and kind
    assert {a["model_version"] for a in live} == {version} and {a["accuracy"] for a in live} == {1}
    assert sum(a["n"] for a in live) == 150
    assert "Drift monitor" in (out / "monitor.html").read_text()
    tags = client.get_model_version(NAME, version).tags
    assert tags["monitor.alert"] == "false"
    run = mlflow.get_run(tags["monitor.last_run"])
    assert run.data.tags["model_version"] == version and run.data.metrics["n"] == 300
    assert "latest drift monitor" in client.get_model_version(NAME, version).description

    shifted_url = f"sqlite:///{tmp_path / 'shifted.db'}"
    _insert(
        shifted_url,
        log_rows(
            world, one_category(world, 300, seed=5), model_name=NAME, model_version=version,
            start=now - 600,
        ),
    )  # fmt: skip
    out = tmp_path / "shifted"
    assert main(["--params", str(PARAMS), "--db", shifted_url, "--out", str(out)]) == 1
    assert json.loads((out / "monitor.json").read_text())["alert"] is True
    assert client.get_model_version(NAME, version).tags["monitor.alert"] == "true"


def _answer(request_id: str, version: str, role: str, category: str, kind: str = "text"):
    return {
        "request_id": request_id,
        "ts": time.time() - 60,
        "endpoint": "predict",
        "model_name": "gate-test",
        "model_version": version,
        "role": role,
        "query_kind": kind,
        "category": category,
        "probability": 0.9,
    }


def test_live_evidence_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    monkeypatch.setenv("MARKETPLACE_PREDICTION_LOG_URL", url)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("gate-test")
    for _ in range(3):
        mv = client.create_model_version("gate-test", source=str(tmp_path))
        client.set_model_version_tag("gate-test", mv.version, "test_accuracy", "0.8")
        client.set_model_version_tag("gate-test", mv.version, INDEX_TAG, "10")
    live = PromoteLiveParams(required=True, min_feedback=40, tolerance=0.05, window_days=1)
    gate = PromoteParams(
        alias="production", metric="test_accuracy", tolerance=0.01, require_index=True, live=live
    )
    promote(client, "gate-test", "1", gate)  # the first production needs no live evidence

    # 50 requests served by v1 (production) and scored in shadow by v2 and v3, with the
    # seller's category: v1 right on 40, v2 on 39 (within 0.05), v3 on 30.
    rows, feedback = [], []
    for i in range(50):
        rid = f"r{i}"
        kind = "image+text" if i % 2 else "text"
        rows += [
            _answer(rid, "1", "served", "Appliances" if i < 40 else "Other Goods", kind),
            _answer(rid, "2", "shadow", "Appliances" if i < 39 else "Other Goods", kind),
            _answer(rid, "3", "shadow", "Appliances" if i < 30 else "Other Goods", kind),
        ]
        feedback.append({"request_id": rid, "ts": time.time(), "category": "Appliances"})
    _insert(url, rows[:60], feedback[:20])  # 20 feedback rows: not enough evidence yet
    with pytest.raises(PromotionRefusedError, match="has 20 feedback rows"):
        promote(client, "gate-test", "2", gate)
    _insert(url, rows[60:], feedback[20:])

    db = engine(url)
    accuracy = {(a.model_version, a.query_kind): a for a in live_accuracy(db, "gate-test")}
    assert accuracy[("1", "text")].n == 25 and accuracy[("2", "image+text")].n == 25
    agreed = {(a.shadow_version, a.query_kind): a.agreed for a in agreement(db, "gate-test")}
    assert agreed[("3", "text")] + agreed[("3", "image+text")] == 40  # 30 + 10 "Other Goods"
    db.dispose()

    with pytest.raises(PromotionRefusedError, match="live accuracy is worse"):
        promote(client, "gate-test", "3", gate)  # 0.60 vs 0.80
    result = promote(client, "gate-test", "2", gate)  # 0.78 vs 0.80: within the tolerance
    assert result.action == "promoted"
    tag = client.get_model_version("gate-test", "2").tags["production.live_gate"]
    assert tag.startswith("0.7800 on 50 vs 0.8000 on 50")
    assert promote(client, "gate-test", "3", gate, force=True).forced  # --force skips it
