"""Watching production on real uvicorn servers: the prediction log, feedback and live
accuracy, a shadow version, a canary share, and what a clean stop or a kill -9 loses.

Three servers over the tiny registry (tests/serving/conftest.py): logging only (1,000
requests, feedback, a clean stop); a shadow version; a canary version (2,000 clients,
then killed with SIGKILL under load).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from marketplace.core import db
from marketplace.inference import Listing, Marketplace
from marketplace.mlops import log_schema
from marketplace.mlops.prediction_log import vector_from_bytes
from tests.helpers import api_process
from tests.helpers.tiny import Registry, photo

pytestmark = [pytest.mark.slow, pytest.mark.server]

FLUSH_S = 1.0


@contextlib.contextmanager
def server(registry: Registry, log_url: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m serving`` on a free port, logging to ``log_url``; yields its URL and
    process (the test may stop it itself), else stops it by PID at the end."""
    settings = {
        "MARKETPLACE_MODEL_NAME": registry.name,
        "MARKETPLACE_PREDICTION_LOG_URL": log_url,
        "MARKETPLACE_PREDICTION_LOG_FLUSH_S": str(FLUSH_S),
        **env,
    }
    with api_process(registry.uri, settings) as (base, process):
        yield base, process


def _rows(url: str) -> pd.DataFrame:
    with db.engine(url).connect() as connection:
        return pd.read_sql(sa.select(log_schema.predictions), connection)


def _metric(text: str, name: str) -> dict[tuple[str, ...], float]:
    """``{label values: value}`` of metric ``name`` in a Prometheus exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels = tuple(re.findall(r'="([^"]*)"', line.split("}")[0]))
            out[labels] = float(line.rsplit(" ", 1)[1])
    return out


def _queries(registry: Registry) -> list[dict]:
    """Every catalogue listing as three /predict queries: photo, text, photo + text."""
    out = []
    for n, row in enumerate(registry.listings.itertuples()):
        image = photo(row.label * 100 + n % 3)
        text = f"{row.title}. {row.description}"
        truth = row.root_category
        out.append({"files": {"image": ("p.jpg", image, "image/jpeg")}, "truth": truth})
        out.append({"data": {"text": text, "price": str(row.price)}, "truth": truth})
        files = {"image": ("p.jpg", image, "image/jpeg")}
        out.append({"files": files, "data": {"text": text}, "truth": truth})
    return out


def _predict(base: str, client: httpx.Client, query: dict) -> httpx.Response:
    return client.post(f"{base}/predict", files=query.get("files"), data=query.get("data"))


@pytest.fixture(scope="module")
def challenger(registry: Registry) -> Iterator[str]:
    """Version 2 (another seed, its own index) as the ``challenger`` alias."""
    client = mlflow.MlflowClient(registry.uri, registry.uri)
    client.set_registered_model_alias(registry.name, "challenger", "2")
    yield "2"
    client.delete_registered_model_alias(registry.name, "challenger")


@pytest.fixture(scope="module")
def logged(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """1,000 answered requests on a logging server, feedback on its predictions, and the
    server stopped cleanly; what was asked and answered, and the log's URL."""
    url = f"sqlite:///{tmp_path_factory.mktemp('log') / 'predictions.db'}"
    queries = _queries(registry)  # 117 predictions
    ids = list(registry.listings["product_id"])
    answered: dict[str, dict] = {}
    with server(registry, url) as (base, _), httpx.Client(timeout=60) as client:

        def one(i: int) -> None:
            if i < len(queries):
                response = _predict(base, client, queries[i])
                kind = "predict"
            elif i % 4 == 0:
                response = client.post(f"{base}/similar", data={"text": "sofa table", "k": "5"})
                kind = "similar"
            else:
                response = client.get(f"{base}/products/{ids[i % len(ids)]}/similar?k=5")
                kind = "product_similar"
            assert response.status_code == 200, response.text
            answered[response.headers["X-Request-ID"]] = {
                "i": i,
                "endpoint": kind,
                **response.json(),
            }

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(1000)))
        # Feedback at once: most of these rows are still in the writer's queue.
        feedback = {}
        for rid, answer in answered.items():
            if answer["endpoint"] == "predict":
                truth = queries[answer["i"]]["truth"]
                r = client.post(f"{base}/feedback", json={"request_id": rid, "category": truth})
                assert r.status_code == 204, r.text
                feedback[rid] = truth
        metrics = client.get(f"{base}/metrics").text
        extra = {
            "clicked": client.post(
                f"{base}/feedback",
                json={"request_id": next(iter(answered)), "clicked_product_id": ids[0]},
            ).status_code,
            "unknown_id": client.post(
                f"{base}/feedback", json={"request_id": "nope", "category": "Appliances"}
            ).status_code,
            "unknown_category": client.post(
                f"{base}/feedback", json={"request_id": next(iter(feedback)), "category": "Cars"}
            ),
            "neither": client.post(f"{base}/feedback", json={"request_id": "x"}).status_code,
        }
    # The server is stopped (SIGTERM: uvicorn's clean shutdown) before the log is read.
    return {"url": url, "answered": answered, "feedback": feedback, "metrics": metrics, **extra}


def test_every_answer_is_one_row_and_a_clean_stop_loses_none(logged: dict) -> None:
    rows = _rows(logged["url"])
    answered = logged["answered"]
    assert len(answered) == 1000
    assert len(rows) == 1000 and set(rows["request_id"]) == set(answered)
    assert (rows["role"] == "served").all() and (rows["model_version"] == "1").all()
    for row in rows.itertuples():
        answer = answered[row.request_id]
        assert row.endpoint == answer["endpoint"]
        assert row.latency_ms > 0 and row.client
        if row.endpoint == "predict":
            assert row.query_kind == answer["query"]
            assert (row.category, row.probability) == (answer["category"], answer["confidence"])
            ranking = json.loads(row.top_k)
            assert ranking[0] == [answer["category"], round(answer["confidence"], 6)]
            assert len(ranking) == 13
            assert (row.image_vector is not None) == ("image" in row.query_kind)
            assert (row.text_vector is not None) == ("text" in row.query_kind)
            assert (row.image_sha256 is not None) == (row.image_bytes is not None)
        else:
            assert json.loads(row.top_k) == [p["product_id"] for p in answer["results"]]
            assert row.category == answer["results"][0]["category"]
            assert row.query_kind == ("product" if row.endpoint == "product_similar" else "text")
            assert (row.text_vector is not None) == (row.endpoint == "similar")


def test_logged_vectors_are_the_encoders_vectors(logged: dict, registry: Registry) -> None:
    """The photo and text vectors in the log are what the frozen encoders give."""
    rows = _rows(logged["url"])
    market = Marketplace.from_registry(registry.name, version="1")
    both = rows[rows["query_kind"] == "image+text"].iloc[0]
    listing = registry.listings.iloc[int(logged["answered"][both.request_id]["i"]) // 3]
    n = int(logged["answered"][both.request_id]["i"]) // 3
    prediction = market.predict_encoded_many(
        [_listing(photo(listing.label * 100 + n % 3), f"{listing.title}. {listing.description}")]
    )[0]
    np.testing.assert_allclose(
        vector_from_bytes(both.image_vector), prediction.image_vector, atol=2e-3, rtol=1e-3
    )
    np.testing.assert_allclose(
        vector_from_bytes(both.text_vector), prediction.text_vector, atol=2e-3, rtol=1e-3
    )


def _listing(image: bytes, text: str) -> Listing:
    return Listing(image, text, None)


def test_feedback_gives_the_offline_live_accuracy(logged: dict) -> None:
    rows = _rows(logged["url"])
    with db.engine(logged["url"]).connect() as connection:
        stored = pd.read_sql(sa.select(log_schema.feedback), connection)
    assert len(stored) == len(logged["feedback"]) + 1  # and the click
    assert stored["clicked_product_id"].notna().sum() == 1
    scored = stored.dropna(subset=["category"]).merge(rows, on="request_id", suffixes=("", "_p"))
    offline = (
        (scored["category"] == scored["category_p"])
        .groupby([scored["model_version"], scored["query_kind"]])
        .mean()
    )
    live = _metric(logged["metrics"], "marketplace_live_accuracy")
    assert set(live) == {(v, k) for v, k in offline.index} and len(live) == 3
    for (version, kind), accuracy in offline.items():
        assert live[(version, kind)] == pytest.approx(accuracy)
    assert _metric(logged["metrics"], "marketplace_feedback_total")[("category",)] == len(scored)
    assert logged["clicked"] == 204 and logged["unknown_id"] == 404 and logged["neither"] == 422
    assert logged["unknown_category"].status_code == 422
    assert "unknown category" in logged["unknown_category"].json()["detail"]


def test_a_shadow_version_changes_no_answer(
    logged: dict, registry: Registry, challenger: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shadow.db'}"
    queries = _queries(registry)
    served = {a["i"]: a for a in logged["answered"].values() if a["endpoint"] == "predict"}
    with (
        server(registry, url, MARKETPLACE_SHADOW_ALIAS="challenger") as (base, _),
        httpx.Client(timeout=60) as client,
    ):
        answers = {}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda q: _predict(base, client, q), queries))
        for i, response in enumerate(responses):
            assert response.status_code == 200, response.text
            answers[response.headers["X-Request-ID"]] = response.json()
            assert response.json()["category"] == served[i]["category"]
            assert response.json()["model"]["version"] == "1"
            np.testing.assert_allclose(
                [c["probability"] for c in response.json()["top_k"]],
                [c["probability"] for c in served[i]["top_k"]],
                atol=1e-5,
            )
        metrics = client.get(f"{base}/metrics").text
    rows = _rows(url)
    shadow = rows[rows["role"] == "shadow"].set_index("request_id")
    assert len(rows[rows["role"] == "served"]) == len(queries) == len(shadow)
    assert set(shadow.index) == set(answers) and (shadow["model_version"] == challenger).all()
    assert shadow["image_vector"].isna().all()
    outcomes = _metric(metrics, "marketplace_shadow_predictions_total")
    assert outcomes.get(("error",), 0) == 0 and outcomes.get(("skipped",), 0) == 0
    # The shadow reused the served version's vectors: its answers are version 2's own.
    market = Marketplace.from_registry(registry.name, version=challenger)
    for rid in list(answers)[:9]:
        i = next(i for i, r in enumerate(responses) if r.headers["X-Request-ID"] == rid)
        query = queries[i]
        image = query.get("files", {}).get("image", (None, None))[1]
        text = query.get("data", {}).get("text")
        price = query.get("data", {}).get("price")
        expected = market.predict(
            image=image, text=text, price=None if price is None else float(price)
        )
        assert shadow.loc[rid, "category"] == expected[0][0]
        assert shadow.loc[rid, "probability"] == pytest.approx(expected[0][1], abs=1e-5)


def test_a_canary_share_and_a_kill_minus_9(
    registry: Registry, challenger: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    product = registry.product_with_photo
    with server(registry, url, MARKETPLACE_CANARY_PERCENT="20") as (base, process):
        limits = httpx.Limits(max_connections=8)
        with httpx.Client(timeout=60, limits=limits) as client:

            def version(client_id: str) -> str:
                r = client.get(
                    f"{base}/products/{product}/similar?k=3", headers={"X-Client-ID": client_id}
                )
                assert r.status_code == 200, r.text
                return r.json()["model"]["version"]

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                versions = list(pool.map(version, [f"client-{i}" for i in range(2000)]))
                again = list(pool.map(version, [f"client-{i}" for i in range(200)]))
            share = versions.count(challenger) / len(versions)
            assert abs(share - 0.20) <= 0.03, share
            assert again == versions[:200]  # sticky per client

            # kill -9 under load: what is lost was answered in the last flush interval.
            answered: list[tuple[str, float]] = []
            stop = threading.Event()

            def load() -> None:
                while not stop.is_set():
                    with contextlib.suppress(httpx.TransportError):
                        r = client.get(f"{base}/products/{product}/similar?k=3")
                        if r.status_code == 200:
                            answered.append((r.headers["X-Request-ID"], time.monotonic()))

            threads = [threading.Thread(target=load) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(2.5)
            os.kill(process.pid, signal.SIGKILL)
            killed = time.monotonic()
            process.wait(timeout=30)
            stop.set()
            for thread in threads:
                thread.join()
    rows = _rows(url)
    assert rows["client"].notna().all()
    by_client = rows.iloc[:2200].groupby("client")["model_version"].nunique()
    assert (by_client == 1).all()  # one version per client in the log too
    logged = set(rows["request_id"])
    lost = [t for rid, t in answered if rid not in logged]
    print(f"kill -9: {len(lost)} of {len(answered)} answers lost, all within "
          f"{killed - min(lost, default=killed):.2f} s of the kill")  # fmt: skip
    assert len(answered) > 100 and len(logged) >= 2200
    # At most the last flush interval (plus a batch's write on this busy machine).
    assert all(killed - t <= FLUSH_S + 0.5 for t in lost)
