"""Query kinds: what a listing brings to a model, named once for every layer.

A listing is classified (and searched for) from a photo alone, a text alone, or both.
Each kind is a product in its own right, so each is trained for, evaluated, calibrated,
gated and served on its own: an average over kinds would hide a broken one.
"""

from __future__ import annotations

from marketplace.core.errors import InputError

QUERY_KINDS = ("image", "text", "image+text")


def query_kind(has_text: bool, has_image: bool) -> str:
    """The kind of a listing with (or without) a text and a photo."""
    if not has_text and not has_image:
        raise InputError("a listing needs a photo, a text, or both")
    return "image+text" if has_text and has_image else "image" if has_image else "text"


def kind_slug(kind: str) -> str:
    """The kind as it appears in metric and tag names (``image_text``: MLflow refuses ``+``)."""
    if kind not in QUERY_KINDS:
        raise ValueError(f"unknown query kind {kind!r}; expected one of {QUERY_KINDS}")
    return kind.replace("+", "_")
