"""The search page: ``GET /`` and its assets (``/static/…``), plain files from ``serving/static``.

No build step, no CDN, no external fonts: the page is one HTML file, one stylesheet and
one script, and it only calls this API (``/model`` with its model card, ``/predict``,
``/similar``, ``/products/{id}/similar``, ``/products/{id}/image``; ``PUT
/products/{id}`` when a seller publishes, ``/feedback`` for the category kept or chosen
and for "More like this" clicks), so it works offline and wherever the API runs. Files
are served with ETag and Last-Modified by Starlette's ``StaticFiles`` and
``Cache-Control: no-cache``: a browser revalidates (a 304, no body) and so never keeps a
stale script after an upgrade.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
PAGE = STATIC_DIR / "index.html"
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["page"])


@router.get("/", response_class=FileResponse, include_in_schema=False)
async def page() -> FileResponse:
    """The search page (HTML); it loads ``/static/app.css`` and ``/static/app.js``."""
    return FileResponse(PAGE, media_type="text/html; charset=utf-8", headers=NO_CACHE)


class _Assets(StaticFiles):
    """``StaticFiles`` (ETag, Last-Modified, 304s) that asks browsers to revalidate."""

    def file_response(self, *args: Any, **kwargs: Any) -> Any:
        response = super().file_response(*args, **kwargs)
        response.headers.update(NO_CACHE)
        return response


def assets() -> StaticFiles:
    """The app for ``/static``: mounted by ``create_app`` (a router cannot carry a mount)."""
    return _Assets(directory=STATIC_DIR)
