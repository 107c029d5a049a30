"""schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.serving.schemathesis_hooks``) for what a
JSON schema cannot say: a photo must decode (the schema says JPEG/PNG/WebP, random bytes
are not one: 415 is right for them)."""

from __future__ import annotations

import io
from typing import Any

import schemathesis
from PIL import Image


def _photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, "JPEG")
    return out.getvalue()


PHOTO = _photo()


def _fields(body: Any) -> Any:
    """A form body's fields (schemathesis may wrap them with their content types)."""
    return getattr(body, "body", body)


def _positive(case: Any) -> bool:
    """A case generated to be valid (negative cases must keep their invalid photo)."""
    meta = getattr(case, "meta", None)
    return meta is None or str(meta.generation.mode.value) == "positive"


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if not _positive(case):
        return case
    fields = _fields(case.body)
    if isinstance(fields, dict) and isinstance(fields.get("image"), bytes | str):
        fields["image"] = PHOTO
    return case
