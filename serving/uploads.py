"""A listing sent as ``multipart/form-data``: read in memory, parsed by FastAPI, checked.

FastAPI parses the form into ``ListingForm`` (so the OpenAPI schema is generated from it),
through ``ListingRoute``, whose requests read the body chunk by chunk and refuse it (413)
the moment it passes the size limit, so an oversized upload is never held whole, and parse
it from memory (never spooled to a temporary file); nothing in it is unpickled. The
model's field types (pydantic) give each bad field its message (422). What depends on the
service's settings is checked by ``listing_query``: photos must be JPEG, PNG or WebP as
Pillow identifies them from the header (415), and their pixel count is checked from the
header before any decoding, which stops decompression bombs (413); text length and ``k``
have configured limits (422).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import File, HTTPException, Request, Response, UploadFile
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from serving.settings import Settings

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")  # Pillow format names: what a photo may be


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


def _blank_is_unsent(value: Any) -> Any:
    """A form field's text, stripped; a blank one (an HTML form's empty input) is not sent."""
    return (value.strip() or None) if isinstance(value, str) else value


def _a_file_part(value: Any) -> Any:
    if isinstance(value, str):
        if value:
            raise ValueError("image must be a file part (multipart filename=...)")
        return None
    return value


# Form fields arrive as strings: pydantic parses them (422 naming the field, e.g. "price:
# Input should be greater than or equal to 0"); blank is the same as not sent.
FormNumber = Annotated[
    Annotated[float, Field(ge=0, allow_inf_nan=False)] | None, BeforeValidator(_blank_is_unsent)
]
FormInteger = Annotated[int | None, BeforeValidator(_blank_is_unsent)]
FormPhoto = Annotated[UploadFile | None, BeforeValidator(_a_file_part)]


class ListingForm(StrictForm):
    """A listing query: ``image`` and/or ``text``, plus options (strings, as forms send)."""

    image: FormPhoto = Field(None, description="JPEG, PNG or WebP photo")
    text: str | None = Field(None, description="title and/or description")
    price: FormNumber = Field(None, description="GBP (predict)")
    k: FormInteger = Field(None, description="results (similar) or top categories (predict)")
    category: str | None = Field(None, description="filter (similar)")
    min_price: FormNumber = Field(None, description="filter (similar)")
    max_price: FormNumber = Field(None, description="filter (similar)")

    @field_validator("text", mode="before")
    @classmethod
    def _text_is_a_field(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("text must be a form field, not a file")
        return (value or "").strip() or None

    @field_validator("category", mode="before")
    @classmethod
    def _category(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value or None
        raise ValueError("expected a form field, got a file")

    @model_validator(mode="after")
    def _a_query(self) -> ListingForm:
        # An empty price range (min_price above max_price) is a valid question whose
        # answer is no listing, not a client error: the schema can state neither.
        if self.image is None and self.text is None:
            raise ValueError("send an 'image' file, a 'text' field, or both")
        return self


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


def check_image(data: bytes, settings: Settings) -> bytes:
    """Type and size checks that need no decoding; the model decodes (422 if corrupt).

    Pillow identifies the type from the header alone, limited to ``IMAGE_FORMATS`` (415 for
    anything else; 422 where its own first-bytes check takes the file for one of them but
    the header is damaged), and gives the pixel count before any pixel is decoded (413
    above the limit: no decompression bomb is ever expanded)."""
    if not data:
        raise HTTPException(422, "the image is empty")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:  # the header only
            width, height = image.size
    except Image.UnidentifiedImageError:
        if _claims_a_photo_type(data):  # a JPEG/PNG/WebP whose header is damaged
            raise HTTPException(422, "corrupt image: its header cannot be read") from None
        raise HTTPException(415, "unsupported image type: send a JPEG, PNG or WebP photo") from None
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


def _claims_a_photo_type(data: bytes) -> bool:
    """Whether Pillow's own first-bytes check (each format plugin's ``accept``, as
    ``Image.open`` runs it on the first 16 bytes) takes ``data`` for one of ``IMAGE_FORMATS``."""
    Image.init()  # every plugin registered (Image.open registers WebP only on demand)
    prefix = data[:16]
    return any(
        (accept := Image.OPEN[name][1]) is not None and bool(accept(prefix))
        for name in IMAGE_FORMATS
    )


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
