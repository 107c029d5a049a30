"""A listing sent as ``multipart/form-data``: read in memory, parsed by FastAPI, checked.

FastAPI parses the form into ``ListingForm`` (so the OpenAPI schema is generated from it),
through ``ListingRoute``, whose requests read the body chunk by chunk and refuse it (413)
the moment it passes the size limit, so an oversized upload is never held whole, and parse
it from memory (never spooled to a temporary file); nothing in it is unpickled. The
model's validators give each bad field its message (422). What depends on the service's
settings is checked by ``listing_query``: photos must be JPEG, PNG or WebP by their magic
bytes (415), and their pixel count is checked from the header before any decoding, which
stops decompression bombs (413); text length and ``k`` have configured limits (422).
"""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import File, HTTPException, Request, Response, UploadFile
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from serving.settings import Settings

IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class StrictForm(BaseModel):
    """A form that names an unknown field in its error (a typo is never silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown field(s) {', '.join(unknown)}; expected {', '.join(cls.model_fields)}"
                )
        return data


class ListingForm(StrictForm):
    """A listing query: ``image`` and/or ``text``, plus options (strings, as forms send)."""

    image: UploadFile | None = Field(None, description="JPEG, PNG or WebP photo")
    text: str | None = Field(None, description="title and/or description")
    price: float | None = Field(None, description="GBP (predict)")
    k: int | None = Field(None, description="results (similar) or top categories (predict)")
    category: str | None = Field(None, description="filter (similar)")
    min_price: float | None = Field(None, description="filter (similar)")
    max_price: float | None = Field(None, description="filter (similar)")

    @field_validator("image", mode="before")
    @classmethod
    def _image_is_a_file(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value:
                raise ValueError("image must be a file part (multipart filename=...)")
            return None
        return value

    @field_validator("text", mode="before")
    @classmethod
    def _text_is_a_field(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("text must be a form field, not a file")
        return (value or "").strip() or None

    @field_validator("category", mode="before")
    @classmethod
    def _category(cls, value: Any) -> Any:
        return _field(value) or None

    @field_validator("k", mode="before")
    @classmethod
    def _k_is_an_integer(cls, value: Any) -> Any:
        value = _field(value)
        if value is None or not value.strip():
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"k must be an integer, got {value[:20]!r}") from None

    @field_validator("price", "min_price", "max_price", mode="before")
    @classmethod
    def _non_negative_number(cls, value: Any, info: Any) -> Any:
        value = _field(value)
        if value is None or value.strip() == "":
            return None
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{info.field_name} must be a number, got {value[:40]!r}") from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{info.field_name} must be a finite number >= 0")
        return number

    @model_validator(mode="after")
    def _a_query(self) -> ListingForm:
        # An empty price range (min_price above max_price) is a valid question whose
        # answer is no listing, not a client error: the schema can state neither.
        if self.image is None and self.text is None:
            raise ValueError("send an 'image' file, a 'text' field, or both")
        return self


def _field(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError("expected a form field, got a file")


@dataclass(frozen=True)
class ListingQuery:
    """A checked listing query: the photo's bytes, the text, and the options."""

    image: bytes | None
    text: str | None
    price: float | None
    k: int
    category: str | None
    min_price: float | None
    max_price: float | None


def sniff_image(data: bytes) -> str | None:
    """The format by magic bytes, or ``None`` if it is none of JPEG, PNG, WebP."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_image(data: bytes, settings: Settings) -> bytes:
    """Type and size checks that need no decoding; the model decodes (422 if corrupt)."""
    if not data:
        raise HTTPException(422, "the image is empty")
    kind = sniff_image(data)
    if kind is None:
        raise HTTPException(415, "unsupported image type: send a JPEG, PNG or WebP photo")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"image too large: {exc}") from None
    except Exception as exc:
        raise HTTPException(422, f"corrupt image: {type(exc).__name__}: {exc}") from None
    if width * height > settings.max_image_pixels:
        raise HTTPException(
            413,
            f"image is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {settings.max_image_pixels:,}",
        )
    return data


def check_k(k: int | None, settings: Settings) -> int:
    if k is None:
        return settings.default_k
    if not 1 <= k <= settings.max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.max_k}, got {k}")
    return k


async def listing_query(
    form: Annotated[ListingForm, File(media_type="multipart/form-data")], request: Request
) -> ListingQuery:
    """The form, with the checks that depend on the service's settings."""
    settings: Settings = request.app.state.settings
    if form.text is not None and len(form.text) > settings.max_text_chars:
        raise HTTPException(
            422, f"text is {len(form.text)} characters; the limit is {settings.max_text_chars}"
        )
    image = None if form.image is None else check_image(await form.image.read(), settings)
    return ListingQuery(
        image=image,
        text=form.text,
        price=form.price,
        k=check_k(form.k, settings),
        category=form.category,
        min_price=form.min_price,
        max_price=form.max_price,
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body exceeds {limit} bytes")
    return bytes(body)


class _InMemoryParser(MultiPartParser):
    # The body is already capped at max_upload_bytes, so no part can roll over to disk.
    spool_max_size = 1 << 62


class ListingRequest(Request):
    """A request whose form is read under the size cap and parsed in memory."""

    async def form(self, **_limits: Any) -> FormData:  # type: ignore[override]
        if getattr(self, "_listing_form", None) is None:
            self._listing_form = await self._read_listing_form()
        return self._listing_form

    async def _read_listing_form(self) -> FormData:
        settings: Settings = self.app.state.settings
        content_type = self.headers.get("content-type", "")
        if not content_type and self.headers.get("content-length", "0") == "0":
            raise HTTPException(422, "empty request: send an 'image' file, a 'text' field, or both")
        if content_type.startswith("multipart/form-data"):
            return await self._parse_multipart(settings)
        if content_type.startswith("application/x-www-form-urlencoded"):  # text-only clients
            body = await read_body(self, settings.max_upload_bytes)
            try:
                pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
            except (UnicodeDecodeError, ValueError) as exc:
                raise HTTPException(400, f"malformed form body: {exc}") from None
            return FormData(pairs)
        raise HTTPException(
            415,
            "send multipart/form-data with an 'image' file and/or a 'text' field "
            "(or a url-encoded form with 'text')",
        )

    async def _parse_multipart(self, settings: Settings) -> FormData:
        body = await read_body(self, settings.max_upload_bytes)

        async def stream() -> AsyncIterator[bytes]:
            yield body
            yield b""

        parser = _InMemoryParser(
            self.headers,
            stream(),
            max_files=1,
            max_fields=len(ListingForm.model_fields),
            max_part_size=settings.max_text_chars * 4 + 1024,  # UTF-8: at most 4 bytes a char
        )
        try:
            return await parser.parse()
        except MultiPartException as exc:
            raise HTTPException(400, f"malformed multipart body: {exc.message}") from None


class ListingRoute(APIRoute):
    """Routes that take a listing form read it through ``ListingRequest``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def listing_handler(request: Request) -> Response:
            return await handler(ListingRequest(request.scope, request.receive))

        return listing_handler
