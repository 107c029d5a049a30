"""One real server: ``python -m serving`` (uvicorn) on 127.0.0.1, queried over HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import running_api
from tests.helpers.tiny import Registry

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_real_uvicorn_serves_the_production_model(registry: Registry) -> None:
    with running_api(registry.uri, {"MARKETPLACE_MODEL_NAME": registry.name}, 90) as base:
        predict = httpx.post(
            f"{base}/predict",
            files={"image": ("p.jpg", registry.photo, "image/jpeg")},
            data={"text": "office desk", "price": "40"},
            timeout=30,
        )
        assert predict.status_code == 200, predict.text
        assert predict.json()["model"] == {"name": registry.name, "version": "1"}
        similar = httpx.get(
            f"{base}/products/{registry.product_with_photo}/similar", params={"k": 3}, timeout=10
        )
        assert similar.status_code == 200 and len(similar.json()["results"]) == 3
        assert (
            httpx.get(f"{base}/openapi.json", timeout=10).json()["info"]["title"] == "marketplace"
        )
