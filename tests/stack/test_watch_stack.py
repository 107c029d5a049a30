"""The prediction log on the team stack: answers and feedback in the stack's PostgreSQL."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from marketplace.core import db
from marketplace.mlops import log_schema
from tests.helpers import running_api
from tests.helpers.stack import Remote

pytestmark = [pytest.mark.slow, pytest.mark.stack]


def test_answers_and_feedback_are_logged_in_postgres(remote: Remote) -> None:
    env = {**remote.stack.serving_env(), "MARKETPLACE_MODEL_NAME": remote.name}
    env.pop("MLFLOW_TRACKING_URI")  # running_api gives the API the server's URL
    product = remote.listings["product_id"].iloc[0]
    ids = []
    with running_api(remote.stack.tracking_uri, env=env) as base, httpx.Client() as client:
        for text in ("sofa dining table", "iphone samsung galaxy phone", "drill saw hammer"):
            r = client.post(f"{base}/predict", data={"text": text}, timeout=30)
            assert r.status_code == 200, r.text
            ids.append(r.headers["X-Request-ID"])
            truth = "Home & Garden" if "sofa" in text else r.json()["category"]
            feedback = {"request_id": ids[-1], "category": truth}
            assert client.post(f"{base}/feedback", json=feedback).status_code == 204
        r = client.get(f"{base}/products/{product}/similar?k=3")
        assert r.status_code == 200
        ids.append(r.headers["X-Request-ID"])
        click = {"request_id": ids[-1], "clicked_product_id": r.json()["results"][0]["product_id"]}
        assert client.post(f"{base}/feedback", json=click).status_code == 204
        metrics = client.get(f"{base}/metrics").text
    assert 'marketplace_live_accuracy{model_version="1",query_kind="text"}' in metrics
    engine = db.engine(remote.stack.marketplace_db_uri)
    assert engine.dialect.name == "postgresql"
    with engine.connect() as connection:
        rows = pd.read_sql(
            sa.select(log_schema.predictions).where(log_schema.predictions.c.request_id.in_(ids)),
            connection,
        )
        stored = pd.read_sql(
            sa.select(log_schema.feedback).where(log_schema.feedback.c.request_id.in_(ids)),
            connection,
        )
    assert sorted(rows["request_id"]) == sorted(ids)
    assert list(rows.sort_values("id")["query_kind"]) == ["text", "text", "text", "product"]
    assert rows["text_vector"].notna().sum() == 3
    assert len(stored) == 4 and stored["clicked_product_id"].notna().sum() == 1
