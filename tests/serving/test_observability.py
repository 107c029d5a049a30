"""GET /metrics (Prometheus text format) and request ids, against the tiny registry."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from asgi_correlation_id import CorrelationIdFilter
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.settings import Settings
from tests.helpers.tiny import Registry


@pytest.fixture(scope="module")
def client(registry: Registry) -> Iterator[TestClient]:
    settings = Settings(tracking_uri=registry.uri, model_name=registry.name, admin_token="t0k")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_requests_batches_reloads_and_the_model(client: TestClient) -> None:
    for _ in range(3):
        assert client.post("/predict", data={"text": "sofa"}).status_code == 200
    assert client.post("/predict", data={"text": "sofa", "k": "0"}).status_code == 422
    samples = _samples(client)

    def value(metric: str, **labels: str) -> float:
        return samples[(metric, tuple(sorted(labels.items())))]

    assert value("http_requests_total", handler="/predict", method="POST", status="200") == 3
    assert value("http_requests_total", handler="/predict", method="POST", status="422") == 1
    assert value("http_request_duration_seconds_count", handler="/predict", method="POST") == 4
    assert value("marketplace_predict_batch_size_count") == 3  # the 422 never reached the model
    assert value("marketplace_model_info", name="test-combined", version="1", alias="production")
    assert value("marketplace_model_reloads_total", outcome="success") == 1
    assert value("marketplace_index_size") == 39
    assert not any(name == "http_requests_total" and ("handler", "/metrics") in labels
                   for name, labels in samples)  # fmt: skip


def test_request_id_is_echoed_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    generated = client.get("/health/live").headers["x-request-id"]
    assert len(generated) == 32 and uuid.UUID(generated)
    mine = uuid.uuid4().hex
    caplog.handler.addFilter(CorrelationIdFilter(uuid_length=32))
    with caplog.at_level(logging.INFO, logger="serving"):
        response = client.post(
            "/admin/reload", headers={"Authorization": "Bearer t0k", "X-Request-ID": mine}
        )
    assert response.status_code == 200 and response.headers["x-request-id"] == mine
    loaded = [r for r in caplog.records if r.name == "serving" and "serving" in r.getMessage()]
    assert loaded and all(r.correlation_id == mine for r in loaded)  # type: ignore[attr-defined]
    assert _samples(client)[("marketplace_model_reloads_total", (("outcome", "success"),))] == 2


def test_a_bug_in_the_model_is_a_500_with_its_request_id_not_a_client_error(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marketplace.core.errors import InputError

    market = client.app.state.holder.current  # type: ignore[attr-defined]
    app = create_app(client.app.state.settings, loader=lambda: market)  # type: ignore[attr-defined]

    def broken(**_: object) -> None:
        raise ValueError("shapes (1,384) and (512,) not aligned")  # a bad reload, say

    def refused(**_: object) -> None:
        raise InputError("a listing needs a photo, a text, or both")

    with TestClient(app, raise_server_exceptions=False) as other:
        monkeypatch.setattr(market, "similar_answer", broken)
        with caplog.at_level(logging.ERROR, logger="serving"):
            response = other.post("/similar", data={"text": "sofa"})
        assert response.status_code == 500, response.text
        body = response.json()
        assert body["request_id"] == response.headers["x-request-id"] != "-"
        assert body["request_id"] in body["detail"] and "shapes" not in body["detail"]
        logged = [r for r in caplog.records if body["request_id"] in r.getMessage()]
        assert logged and "not aligned" in logged[0].getMessage() and logged[0].exc_info
        monkeypatch.setattr(market, "similar_answer", refused)  # the project's own input error
        response = other.post("/similar", data={"text": "sofa"})
        assert response.status_code == 422 and "a photo, a text" in response.json()["detail"]
        samples = _samples(other)
    assert samples[("http_requests_total", (("handler", "/similar"), ("method", "POST"),
                    ("status", "500")))] == 1  # fmt: skip
