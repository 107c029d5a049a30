"""Listing photos: the thumbnail the index stage stored for each listing with a photo.

The service has only the registry behind it, so the photos come from the index artifact
(``marketplace.search.thumbnails``), not from the trainer's ``outputs/images``. Responses carry
an ETag naming the index they come from (model version + the thumbnails' hash): a browser
revalidates with ``If-None-Match`` and gets a body-less 304 until another index is served.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from marketplace.inference import Marketplace
from serving.dependencies import ModelDep

router = APIRouter(tags=["images"])

# Fresh for an hour, then revalidated with the ETag (a new model may bring new photos).
CACHE_CONTROL = "public, max-age=3600"
IMAGE_TYPES = {"image/webp": {}, "image/jpeg": {}}


def thumbnails_etag(market: Marketplace) -> str | None:
    """The ETag of every photo of this model's index; ``None`` without thumbnails."""
    if market.thumbnails is None:
        return None
    return f'"{market.index.meta.model_version}-{market.thumbnails.sha256[:20]}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an ``If-None-Match`` list against ``etag``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


@router.get(
    "/products/{product_id}/image",
    response_class=Response,
    responses={
        200: {"content": IMAGE_TYPES, "description": "the listing's thumbnail"},
        304: {"description": "not modified (If-None-Match matched the ETag)"},
        404: {
            "description": "unknown listing, a listing without a photo, or an index "
            "without thumbnails"
        },
    },
)
async def product_image(product_id: str, request: Request, market: ModelDep) -> Response:
    """The thumbnail of a catalogue listing's photo (WebP or JPEG, as the index stored it)."""
    if market.live is not None and (live := await _live_photo(product_id, request, market)):
        return live
    thumbnails = market.thumbnails
    if thumbnails is None:
        raise HTTPException(
            404,
            f"{market.info.name} version {market.info.version} has an index without listing "
            "photos (built before thumbnails were stored); rerun the index stage to add them",
        )
    if market.index.position(product_id) is None:
        raise HTTPException(404, f"unknown product id {product_id!r}")
    data = thumbnails.get(product_id)
    if data is None:
        raise HTTPException(404, f"product {product_id!r} has no photo")
    etag = thumbnails_etag(market)
    assert etag is not None
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=thumbnails.media_type, headers=headers)


async def _live_photo(product_id: str, request: Request, market: Marketplace) -> Response | None:
    """A live listing's photo (404 for a deleted listing); ``None`` for a built one."""
    live = market.live
    entry = live.entry(product_id)
    if entry is None:
        if not live.exists(product_id):
            raise HTTPException(404, f"unknown product id {product_id!r}")
        return None
    if entry.image_sha256 is None:
        raise HTTPException(404, f"product {product_id!r} has no photo")
    etag = f'"live-{entry.image_sha256[:20]}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    data = await run_in_threadpool(
        request.app.state.live_thumbnails.get,
        request.app.state.catalogue,
        market,
        entry.seq,
        entry.image_sha256,
    )
    media = market.thumbnails.media_type if market.thumbnails else "image/webp"
    return Response(data, media_type=media, headers=headers)
