"""Every endpoint and every error path, through FastAPI's TestClient, on a real registry."""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from collections.abc import Iterator

import mlflow
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.app import create_app
from tests.helpers.tiny import ADMIN_TOKEN, Registry, serving_settings

TOKEN = ADMIN_TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(registry: Registry) -> Iterator[TestClient]:
    with TestClient(create_app(serving_settings(registry))) as test_client:
        yield test_client


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds almost no data (a bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + _chunk(b"IEND", b"")
    )


# -- health and model ---------------------------------------------------------------------


def test_health_and_model(client: TestClient, registry: Registry) -> None:
    assert client.get("/health/live").json() == {
        "status": "alive",
        "model_version": None,
        "detail": None,
        "registry": None,
    }
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["model_version"] == "1"
    model = client.get("/model").json()
    assert model["name"] == registry.name and model["version"] == "1"
    assert model["alias"] == "production" and model["run_id"]
    assert model["index_size"] == 39 and model["index_factory"] == "Flat"
    assert 0 <= model["metrics"]["test_accuracy"] <= 1 and len(model["categories"]) == 13
    # Each query kind is reported on its own (the test split's figures).
    assert set(model["by_query_kind"]) == {"image", "text", "image+text"}
    for figures in model["by_query_kind"].values():
        assert set(figures) == {"accuracy", "macro_f1", "top3_accuracy", "log_loss", "ece", "n"}
    assert model["by_query_kind"]["image"]["accuracy"] == model["metrics"]["test_image_accuracy"]
    # The version's model card, as registered (and as the MLflow UI shows it).
    card = model["description"]
    assert card.startswith(f"# {registry.name} version 1") and "## Runs" in card
    assert "| photo only |" in card and "Weakest on" in card and "data.dvc" in card


def test_not_ready_until_a_model_loads(registry: Registry) -> None:
    def broken() -> None:
        raise RuntimeError("registry unreachable")

    app = create_app(serving_settings(registry), loader=broken)  # type: ignore[arg-type]
    with TestClient(app) as test_client:
        assert test_client.get("/health/live").status_code == 200
        ready = test_client.get("/health/ready")
        assert ready.status_code == 503 and "registry unreachable" in ready.json()["detail"]
        assert test_client.get("/model").status_code == 503
        assert test_client.post("/predict", data={"text": "sofa"}).status_code == 503


# -- predict and embed --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"text": "playstation xbox controller"}, "text"),
        ({}, "image"),
        ({"text": "sofa"}, "image+text"),
    ],
)
def test_predict(client: TestClient, registry: Registry, fields: dict, kind: str) -> None:
    files = None if kind == "text" else {"image": ("p.jpg", registry.photo, "image/jpeg")}
    response = client.post("/predict", data={**fields, "k": "3", "price": "25"}, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == kind and body["model"] == {"name": registry.name, "version": "1"}
    assert len(body["top_k"]) == 3 and body["top_k"][0]["category"] == body["category"]
    probabilities = [c["probability"] for c in body["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_predict_accepts_png_and_webp(client: TestClient, registry: Registry) -> None:
    image = Image.open(io.BytesIO(registry.photo))
    for fmt, mime in (("PNG", "image/png"), ("WEBP", "image/webp")):
        out = io.BytesIO()
        image.save(out, fmt)
        files = {"image": (f"p.{fmt.lower()}", out.getvalue(), mime)}
        assert client.post("/predict", files=files).status_code == 200


def test_embed_spaces(client: TestClient, registry: Registry) -> None:
    text = client.post("/embed", data={"text": "sofa"}).json()
    image = client.post("/embed", files={"image": ("p.jpg", registry.photo, "image/jpeg")}).json()
    assert text["dim"] == image["dim"] == 64 and len(text["vector"]) == 64
    assert text["query"] == "text" and image["query"] == "image"
    assert all(v == 0 for v in text["vector"][32:])  # text queries live in the text half
    assert all(v == 0 for v in image["vector"][:32])


# -- similar ------------------------------------------------------------------------------


def test_similar_by_text_with_filters(client: TestClient) -> None:
    response = client.post(
        "/similar",
        data={"text": "iphone samsung", "k": "5", "category": "Home & Garden", "max_price": "200"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["index"] == {"model_version": "1", "size": 39, "factory": "Flat"}
    assert 0 < len(body["results"]) <= 5
    for product in body["results"]:
        assert product["category"] == "Home & Garden" and product["price"] <= 200
    scores = [p["score"] for p in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_similar_by_photo_returns_products_with_photos(
    client: TestClient, registry: Registry
) -> None:
    files = {"image": ("p.jpg", registry.photo, "image/jpeg")}
    body = client.post("/similar", files=files, data={"k": "20"}).json()
    assert body["query"] == "image"
    assert len(body["results"]) == 20
    assert all(p["image_id"] for p in body["results"])
    top = registry.listings.set_index("product_id").loc[body["results"][0]["product_id"]]
    assert top["image_id"] is not None and body["results"][0]["score"] == pytest.approx(1, abs=1e-3)


def test_more_like_this(client: TestClient, registry: Registry) -> None:
    pid = registry.product_with_photo
    response = client.get(f"/products/{pid}/similar", params={"k": 4, "min_price": 0})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 4 and pid not in {p["product_id"] for p in results}
    assert response.json()["query"] == "product"


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({}, 422, "empty request"),
        ({"data": {"price": "3"}}, 422, "an 'image' file, a 'text' field"),
        ({"data": {"text": "sofa", "k": "0"}}, 422, "k must be between 1 and 20"),
        ({"data": {"text": "sofa", "k": "21"}}, 422, "k must be between 1 and 20"),
        ({"data": {"text": "sofa", "k": "many"}}, 422, "k: Input should be a valid integer"),
        (
            {"data": {"text": "sofa", "price": "-1"}},
            422,
            "price: Input should be greater than or equal to 0",
        ),
        ({"data": {"text": "x" * 501}}, 422, "the limit is 500"),
        ({"data": {"text": "sofa", "colour": "red"}}, 422, "unknown field(s) colour"),
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "multipart"),
        ({"files": {"image": ("a.gif", b"GIF89a\x01\x00", "image/gif")}}, 415, "JPEG, PNG or WebP"),
        ({"files": {"image": ("a.jpg", b"", "image/jpeg")}}, 422, "empty"),
        (
            {"files": {"image": ("a.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 500, "image/jpeg")}},
            422,
            "image",
        ),
        ({"files": {"image": ("bomb.png", _png_header(100_000, 100_000), "image/png")}}, 413, ""),
        ({"files": {"image": ("big.png", _png_header(3000, 3000), "image/png")}}, 413, "pixels"),
        ({"data": {"image": "not a file"}}, 422, "image must be a file part"),
        ({"files": {"text": ("t.txt", b"sofa", "text/plain")}}, 422, "text must be a form field"),
        (
            {"data": {"text": "sofa"}, "files": {"category": ("c.txt", b"x", "text/plain")}},
            422,
            "category: expected a form field, got a file",
        ),
        ({"data": {"text": "sofa", "price": "abc"}}, 422, "price: Input should be a valid number"),
    ],
)
def test_bad_requests(client: TestClient, kwargs: dict, status: int, message: str) -> None:
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and message in body["detail"]


def test_the_listing_form_schema_is_generated(client: TestClient) -> None:
    """FastAPI parses the form into serving.uploads.ListingForm and documents it."""
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/embed", "/similar"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]
        assert body["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/ListingForm"}
    form = spec["components"]["schemas"]["ListingForm"]
    assert list(form["properties"]) == [
        "image", "text", "price", "k", "category", "min_price", "max_price"
    ]  # fmt: skip
    assert form["additionalProperties"] is False


def test_truncated_jpeg_is_422(client: TestClient, registry: Registry) -> None:
    files = {"image": ("t.jpg", registry.photo[: len(registry.photo) // 2], "image/jpeg")}
    response = client.post("/predict", files=files)
    assert response.status_code == 422 and "image" in response.json()["detail"]


def test_oversized_upload_is_413(client: TestClient, registry: Registry) -> None:
    big = registry.photo + b"\x00" * (2 * 1024 * 1024)
    response = client.post("/predict", files={"image": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413 and "exceeds" in response.json()["detail"]


def test_uploads_never_touch_disk(
    client: TestClient, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("an upload was spooled to a temporary file")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", refuse)
    padded = registry.photo + b"\x00" * (1536 * 1024)  # beyond Starlette's 1 MB spool
    response = client.post("/predict", files={"image": ("p.jpg", padded, "image/jpeg")})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/products/nope/similar", 404, "unknown product id 'nope'"),
        ("/products/p001/similar?k=0", 422, "k must be between"),
        ("/products/p001/similar?k=abc", 422, "k: Input should be a valid integer"),
    ],
)
def test_bad_product_queries(client: TestClient, path: str, status: int, message: str) -> None:
    response = client.get(path)
    assert response.status_code == status and message in response.json()["detail"]


def test_admin_needs_the_token(client: TestClient, registry: Registry) -> None:
    assert client.post("/admin/reload").status_code == 401
    wrong = client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid bearer token"
    app = create_app(serving_settings(registry, admin_token=None))
    with TestClient(app) as no_admin:
        assert no_admin.post("/admin/reload", headers=AUTH).status_code == 403


# -- reload -------------------------------------------------------------------------------


def test_reload_swaps_in_the_new_production_and_keeps_the_old_on_failure(
    client: TestClient, registry: Registry
) -> None:
    registry_client = mlflow.MlflowClient(registry.uri, registry.uri)
    try:
        registry_client.set_registered_model_alias(registry.name, "production", "2")
        response = client.post("/admin/reload", headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "reloaded": True,
            "version": "2",
            "previous_version": "1",
            "detail": "loaded",
        }
        assert client.get("/model").json()["version"] == "2"
        assert (
            client.post("/similar", data={"text": "sofa"}).json()["index"]["model_version"] == "2"
        )

        registry_client.set_registered_model_alias(registry.name, "production", "3")  # no index
        failed = client.post("/admin/reload", headers=AUTH)
        assert failed.status_code == 500
        assert failed.json()["reloaded"] is False and "has no index" in failed.json()["detail"]
        assert client.get("/model").json()["version"] == "2"  # still serving the old model
        assert client.post("/predict", data={"text": "sofa"}).status_code == 200
    finally:
        registry_client.set_registered_model_alias(registry.name, "production", "1")
        client.post("/admin/reload", headers=AUTH)


def test_an_empty_price_range_answers_no_listings(client: TestClient) -> None:
    """min_price above max_price is a valid question (the schema allows it) with no match."""
    empty = {"min_price": "9", "max_price": "1"}
    similar = client.post("/similar", data={"text": "sofa", **empty})
    assert similar.status_code == 200 and similar.json()["results"] == []
    more = client.get("/products/p001/similar", params=empty)
    assert more.status_code == 200 and more.json()["results"] == []
