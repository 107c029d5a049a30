"""The published OpenAPI contract: every answer the API gives is documented as it is given.

FastAPI documents a 422 as ``HTTPValidationError`` (``detail`` a list), but every error
here is ``{"detail": str, "status": int}`` (serving/app.py), and it knows nothing of the
413/415/400 the form reader gives, the 401/403 of /admin, the 404s or the 503 before a
model is loaded. It also cannot see the limits that come from the settings (``k`` up to
``max_k``, text up to ``max_text_chars``) or that a listing needs a photo or a text. This
module adds them to the generated schema, so clients (and schemathesis) can rely on it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving.observability import REQUEST_ID_HEADER
from serving.settings import Settings

ERROR = {
    "type": "object",
    "required": ["detail", "status"],
    "properties": {
        "detail": {"type": "string"},
        "status": {"type": "integer"},
        "request_id": {"type": "string", "description": "on a 500: quote it (serving/errors.py)"},
    },
    "title": "Error",
}
LISTING_ROUTES = ("/predict", "/embed", "/similar")
MODEL_ROUTES = (*LISTING_ROUTES, "/model", "/products/{product_id}/similar")
WHY = {
    "400": "malformed form body",
    "401": "missing or wrong bearer token",
    "403": "admin endpoints are disabled (no MARKETPLACE_ADMIN_TOKEN)",
    "404": "unknown product id",
    "413": "request body or photo too large",
    "415": "not multipart/form-data (or url-encoded), or a photo that is not JPEG/PNG/WebP",
    "422": "invalid input; the detail says which field and why",
    "503": "no model loaded yet",
}


def _error(code: str) -> dict[str, Any]:
    return {
        "description": WHY.get(code, "see the detail"),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's own error answers, for its decorator: ``@router.post("/x",
    responses=error_responses(404, 422))`` documents them as ``Error`` bodies (a new route
    declares its errors here instead of being added to the path lists above)."""
    return {code: _error(str(code)) for code in codes}


def published_schema(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The app's OpenAPI schema with its real error answers and settings' limits."""
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Error"] = ERROR
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            codes = {"422"} if "422" in responses else set()
            if path in LISTING_ROUTES:
                codes |= {"400", "413", "415", "422"}
                multipart = operation["requestBody"]["content"]["multipart/form-data"]
                multipart["encoding"] = {
                    "image": {"contentType": "image/jpeg, image/png, image/webp"}
                }
            if path in MODEL_ROUTES:
                codes.add("503")
            if path == "/products/{product_id}/similar":
                codes |= {"404", "422"}
            if path.startswith("/admin/"):
                codes |= {"401", "403"}
            for code in codes:
                if code not in responses or "HTTPValidationError" in str(responses[code]):
                    responses[code] = _error(code)
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "k":
                    parameter["schema"] = {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": settings.max_k,
                    }
    _live_listings(schema, components, settings, app)
    _feedback_links(schema)
    categories = _categories(app)
    feedback = components.get("FeedbackRequest", {}).get("properties", {}).get("category")
    if feedback is not None and categories is not None:  # it scores the served model's
        feedback["enum"] = categories
    form = components.get("ListingForm")
    if form is not None:  # a form field is sent or not, never null: no null branches
        limits = {
            "image": PHOTO,
            "text": {"type": "string", "maxLength": settings.max_text_chars},
            "k": _or_empty({"type": "integer", "minimum": 1, "maximum": settings.max_k}),
            "category": {"type": "string"},
            **{
                p: _or_empty({"type": "number", "minimum": 0})
                for p in ("price", "min_price", "max_price")
            },
        }
        for name, field in form["properties"].items():
            field.pop("anyOf", None)
            field.update(limits[name])
        # At least one of a photo and a text that is not blank (a blank one is no text).
        form["anyOf"] = [
            {"required": ["image"]},
            {"required": ["text"], "properties": {"text": {"pattern": r"\S"}}},
        ]
    return schema


PHOTO = {"type": "string", "contentMediaType": "application/octet-stream", "minLength": 1}
EMPTY = {"const": "", "description": "an empty form field is the same as not sending it"}


def _or_empty(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional form field: the value, or empty. FastAPI reads an empty form field
    (what an HTML form sends for an input left blank) as not sent, so the server takes
    it, and the published schema says so."""
    return {"anyOf": [schema, EMPTY]}


def publish(app: FastAPI, settings: Settings) -> None:
    """Serve ``published_schema`` at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = published_schema(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Live listings (serving/routers/products.py): the errors each method gives.
PRODUCT_ROUTE = "/products/{product_id}"
PRODUCT_ERRORS = {
    "get": {"404": "unknown or deleted listing", "422": "invalid product id", "503": WHY["503"]},
    "put": {
        **{code: WHY[code] for code in ("400", "413", "415", "422", "503")},
        "401": WHY["401"],
        "403": "listing changes are disabled (no MARKETPLACE_CATALOGUE_TOKEN)",
    },
    "delete": {
        "401": WHY["401"],
        "403": "listing changes are disabled (no MARKETPLACE_CATALOGUE_TOKEN)",
        "404": "unknown or deleted listing",
        "422": "invalid product id",
        "503": WHY["503"],
    },
}


def _live_listings(
    schema: dict[str, Any], components: dict[str, Any], settings: Settings, app: FastAPI
) -> None:
    for method, operation in schema["paths"].get(PRODUCT_ROUTE, {}).items():
        for code, why in PRODUCT_ERRORS.get(method, {}).items():
            operation["responses"][code] = {**_error(code), "description": why}
        if method == "put":
            multipart = operation["requestBody"]["content"]["multipart/form-data"]
            multipart["encoding"] = {"image": {"contentType": "image/jpeg, image/png, image/webp"}}
    form = components.get("ProductForm")
    if form is None:
        return
    text = {"type": "string", "maxLength": settings.max_text_chars}
    category: dict[str, Any] = {"type": "string"}
    categories = _categories(app)
    if categories is not None:
        category["enum"] = categories
    limits = {
        "image": PHOTO,
        "title": {**text, "pattern": r"\S"},
        "description": text,
        "location": text,
        "category": _or_empty(category),
        "price": _or_empty({"type": "number", "minimum": 0}),
    }
    for name, field in form["properties"].items():  # sent or not, never null
        field.pop("anyOf", None)
        field.update(limits[name])


def _feedback_links(schema: dict[str, Any]) -> None:
    """Feedback is keyed by an answer's ``X-Request-ID``: link /predict's answer to
    ``POST /feedback`` (its request id and category), so clients and stateful tests
    know where a request id comes from."""
    feedback = schema["paths"].get("/feedback", {}).get("post")
    answer = schema["paths"].get("/predict", {}).get("post", {}).get("responses", {}).get("200")
    if feedback is None or answer is None:
        return
    answer.setdefault("headers", {})[REQUEST_ID_HEADER] = {
        "description": "this answer's id: send it to POST /feedback",
        "schema": {"type": "string"},
    }
    answer.setdefault("links", {})["Feedback"] = {
        "operationId": feedback["operationId"],
        "requestBody": {
            "request_id": f"$response.header.{REQUEST_ID_HEADER}",
            "category": "$response.body#/category",
        },
        "description": "the category the seller kept (the predicted one here)",
    }


def _categories(app: FastAPI) -> list[str] | None:
    """The served model's categories (None before a model is loaded)."""
    holder = getattr(app.state, "holder", None)
    if holder is None or holder.current is None:
        return None
    return list(holder.current.categories)
