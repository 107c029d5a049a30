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
        generated = dict(fields)
        fields["image"] = PHOTO
        _as_generated(case, generated)
    return case


def _as_generated(case: Any, generated: dict[str, Any]) -> None:
    """Let schemathesis judge the photo as the image it generated, not as an edit.

    schemathesis revalidates a body it sees edited (by this hook, or by a stateful link
    writing a previous answer's title into it) against the schema, each edited key by
    its live value, and no ``bytes`` value passes a JSON schema (``contains_binary``):
    the valid request would be relabelled negative and its 2xx reported as ST201. So
    the photo becomes the body's baseline, and the image key is judged by the string
    generated for it (valid: the case is positive); every other field, a link's
    included, is still judged as sent. A no-op if these internals change (the checks
    then stay as strict as schemathesis makes them)."""
    meta = getattr(case, "_meta", None)
    initial = getattr(meta, "_initial_containers", None)
    raw = getattr(meta, "raw_containers", None)
    sync = getattr(case, "_sync_validated_hashes", None)
    if not (isinstance(initial, dict) and isinstance(raw, dict) and callable(sync)):
        return
    for location, container in initial.items():
        if getattr(location, "name", "") == "BODY" and isinstance(container, dict):
            container["image"] = PHOTO
            raw.setdefault(location, generated)
    sync()
