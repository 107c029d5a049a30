"""The published OpenAPI contract: every answer the API gives is documented as it is given.

FastAPI documents a 422 as ``HTTPValidationError`` (``detail`` a list), but every error
here is ``{"detail": str, "status": int}`` (serving/app.py), and it knows nothing of the
413/415/400 the form reader gives, the 401/403 of /admin, the 404s or the 503 before a
model is loaded. Each route declares its own error answers on its decorator
(``responses=error_responses(...)``, and ``openapi_extra=PHOTO_PART`` where a photo is
uploaded), so a new route documents itself. What no decorator can state is added here to
the generated schema: FastAPI's own 422 as ``Error``, the limits that come from the
settings (``k`` up to ``max_k``, text up to ``max_text_chars``), the served model's
categories, and that a listing needs a photo or a text. Clients (and schemathesis) rely on it.
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


def error_responses(*codes: int, why: dict[int, str] | None = None) -> dict[int | str, Any]:
    """A route's error answers, for its decorator: ``@router.post("/x",
    responses=error_responses(404, 422, why={404: "unknown x"}))`` documents them as
    ``Error`` bodies, each described by ``why`` or by the common ``WHY``."""
    return {
        code: {**_error(str(code)), **({"description": why[code]} if why and code in why else {})}
        for code in codes
    }


# The answers every route that uses them gives: a listing form (400/413/415/422 from the
# form reader and its checks) and the served model (503 before one is loaded).
LISTING_ERRORS = error_responses(400, 413, 415, 422, 503)
MODEL_ERRORS = error_responses(503)
ADMIN_ERRORS = error_responses(401, 403)
# A route that takes a photo: the types its ``image`` part may have (``openapi_extra``).
PHOTO_PART = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "encoding": {"image": {"contentType": "image/jpeg, image/png, image/webp"}}
            }
        }
    }
}


def published_schema(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The app's OpenAPI schema with its real error answers and settings' limits."""
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Error"] = ERROR
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            if "HTTPValidationError" in str(responses.get("422", "")):  # FastAPI's own
                responses["422"] = _error("422")
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "k":
                    parameter["schema"] = {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": settings.max_k,
                    }
    _product_form(components, settings, app)
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


def _product_form(components: dict[str, Any], settings: Settings, app: FastAPI) -> None:
    """A live listing's form (serving/routers/products.py): its settings' limits."""
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
