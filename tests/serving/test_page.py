"""The search page's server side: the page and its assets, and listing photos from the index."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from marketplace.inference import Marketplace
from serving.app import create_app
from serving.routers.page import STATIC_DIR
from serving.settings import Settings
from tests.helpers.tiny import Registry

PAGE_BUDGET_BYTES = 100 * 1024  # the page and its assets (issue 14)


@pytest.fixture(scope="module")
def client(registry: Registry) -> Iterator[TestClient]:
    settings = Settings(tracking_uri=registry.uri, model_name=registry.name)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_page_and_assets_are_served_self_contained(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
    assert sorted(assets) == ["/static/app.css", "/static/app.js"]
    total = len(page.content)
    for path in assets:
        asset = client.get(path)
        assert asset.status_code == 200 and asset.headers["cache-control"] == "no-cache"
        total += len(asset.content)
        # Offline: nothing is fetched from another origin (no CDN, no web fonts).
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", asset.text), path
        revalidated = client.get(path, headers={"If-None-Match": asset.headers["etag"]})
        assert revalidated.status_code == 304 and not revalidated.content
    assert total <= PAGE_BUDGET_BYTES, f"page + assets are {total} bytes"
    assert client.get("/static/nothing.js").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not API


def test_static_files_cannot_escape_their_folder(client: TestClient) -> None:
    assert (STATIC_DIR / "index.html").is_file()
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/%2e%2e/app.py").status_code == 404


def test_listing_photo_with_etag_and_revalidation(client: TestClient, registry: Registry) -> None:
    response = client.get(f"/products/{registry.product_with_photo}/image")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["cache-control"] == "public, max-age=3600"
    etag = response.headers["etag"]
    assert re.fullmatch(r'"1-[0-9a-f]{20}"', etag)  # model version 1's index
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "WEBP" and max(image.size) <= 160
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get(
            f"/products/{registry.product_with_photo}/image", headers={"If-None-Match": header}
        )
        assert again.status_code == 304 and not again.content and again.headers["etag"] == etag
    stale = client.get(
        f"/products/{registry.product_with_photo}/image", headers={"If-None-Match": '"0-abc"'}
    )
    assert stale.status_code == 200 and stale.content == response.content


def test_every_listing_with_a_photo_has_one(client: TestClient, registry: Registry) -> None:
    for row in registry.listings.itertuples():
        response = client.get(f"/products/{row.product_id}/image")
        if pd.isna(row.image_id):
            assert response.status_code == 404
            assert response.json()["detail"] == f"product {row.product_id!r} has no photo"
        else:
            assert response.status_code == 200, row.product_id


def test_unknown_listing_is_404(client: TestClient) -> None:
    response = client.get("/products/nope/image")
    assert response.status_code == 404 and "unknown product id" in response.json()["detail"]


def test_an_older_index_without_photos_still_serves_and_says_why(registry: Registry) -> None:
    settings = Settings(tracking_uri=registry.uri, model_name=registry.name)
    loader = lambda: Marketplace.from_registry(registry.name, version="2")  # noqa: E731
    with TestClient(create_app(settings, loader=loader)) as older:
        assert older.get("/health/ready").status_code == 200
        response = older.get(f"/products/{registry.product_with_photo}/image")
        assert response.status_code == 404
        assert "without listing photos" in response.json()["detail"]
        assert "rerun the index stage" in response.json()["detail"]
        assert older.post("/similar", data={"text": "sofa"}).status_code == 200
