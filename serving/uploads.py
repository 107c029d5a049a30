"""Reading and checking a listing sent as ``multipart/form-data``, entirely in memory.

The body is read chunk by chunk and refused (413) the moment it passes the size limit, so
an oversized upload is never held whole; it is parsed from memory (never spooled to a
temporary file) and nothing in it is unpickled. Photos must be JPEG, PNG or WebP by their
magic bytes (415), and their pixel count is checked from the header before any decoding,
which stops decompression bombs (413).
"""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from PIL import Image
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from serving.settings import Settings

IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
FORM_FIELDS = ("image", "text", "price", "k", "category", "min_price", "max_price")


class _InMemoryParser(MultiPartParser):
    # The body is already capped at max_upload_bytes, so no part can roll over to disk.
    spool_max_size = 1 << 62


@dataclass(frozen=True)
class ListingForm:
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


def _number(value: str | None, name: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise HTTPException(422, f"{name} must be a number, got {value[:40]!r}") from None
    if not math.isfinite(number) or number < 0:
        raise HTTPException(422, f"{name} must be a finite number >= 0")
    return number


def check_k(k: int | None, settings: Settings) -> int:
    if k is None:
        return settings.default_k
    if not 1 <= k <= settings.max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.max_k}, got {k}")
    return k


def check_price_range(min_price: float | None, max_price: float | None) -> None:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise HTTPException(422, f"min_price {min_price} is above max_price {max_price}")


async def read_listing_form(request: Request, settings: Settings) -> ListingForm:
    """Parse and validate a listing query: ``image`` and/or ``text``, plus options."""
    content_type = request.headers.get("content-type", "")
    if not content_type and request.headers.get("content-length", "0") == "0":
        raise HTTPException(422, "empty request: send an 'image' file, a 'text' field, or both")
    if content_type.startswith("multipart/form-data"):
        form = await _parse_multipart(request, settings)
    elif content_type.startswith("application/x-www-form-urlencoded"):  # text-only clients
        body = await read_body(request, settings.max_upload_bytes)
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError) as exc:
            raise HTTPException(400, f"malformed form body: {exc}") from None
        form = FormData(pairs)
    else:
        raise HTTPException(
            415,
            "send multipart/form-data with an 'image' file and/or a 'text' field "
            "(or a url-encoded form with 'text')",
        )
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:
        raise HTTPException(
            422, f"unknown field(s) {', '.join(unknown)}; expected {', '.join(FORM_FIELDS)}"
        )
    image = None
    upload = form.get("image")
    if isinstance(upload, UploadFile):
        image = check_image(await upload.read(), settings)
    elif isinstance(upload, str) and upload:
        raise HTTPException(422, "image must be a file part (multipart filename=...)")
    text = form.get("text")
    if text is not None and not isinstance(text, str):
        raise HTTPException(422, "text must be a form field, not a file")
    text = (text or "").strip() or None
    if text is not None and len(text) > settings.max_text_chars:
        raise HTTPException(
            422, f"text is {len(text)} characters; the limit is {settings.max_text_chars}"
        )
    if image is None and text is None:
        raise HTTPException(422, "send an 'image' file, a 'text' field, or both")
    raw_k = form.get("k")
    k = None
    if isinstance(raw_k, str) and raw_k.strip():
        try:
            k = int(raw_k)
        except ValueError:
            raise HTTPException(422, f"k must be an integer, got {raw_k[:20]!r}") from None
    min_price = _number(_str(form.get("min_price")), "min_price")
    max_price = _number(_str(form.get("max_price")), "max_price")
    check_price_range(min_price, max_price)
    return ListingForm(
        image=image,
        text=text,
        price=_number(_str(form.get("price")), "price"),
        k=check_k(k, settings),
        category=_str(form.get("category")) or None,
        min_price=min_price,
        max_price=max_price,
    )


async def _parse_multipart(request: Request, settings: Settings) -> FormData:
    body = await read_body(request, settings.max_upload_bytes)

    async def stream() -> AsyncIterator[bytes]:
        yield body
        yield b""

    parser = _InMemoryParser(
        request.headers,
        stream(),
        max_files=1,
        max_fields=len(FORM_FIELDS),
        max_part_size=settings.max_text_chars * 4 + 1024,  # UTF-8: at most 4 bytes a char
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.message}") from None


def _str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise HTTPException(422, "expected a form field, got a file")
