"""Similar products: for a photo and/or text, or for a listing in the catalogue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from marketplace.inference import Filters, Marketplace
from serving.contract import LISTING_ERRORS, PHOTO_PART, error_responses
from serving.dependencies import ModelDep, SettingsDep
from serving.routers._common import call_model, model_ref
from serving.schemas import IndexRef, Product, SimilarResponse
from serving.uploads import ListingQuery, ListingRoute, check_k, listing_query
from serving.watch import log_product_similar, log_similar

router = APIRouter(tags=["similar"], route_class=ListingRoute)


def _response(market: Marketplace, results: list[dict], query: str) -> SimilarResponse:
    meta = market.index.meta
    return SimilarResponse(
        results=[Product(**r) for r in results],
        query=query,
        model=model_ref(market),
        index=IndexRef(model_version=meta.model_version, size=meta.size, factory=meta.factory),
    )


@router.post(
    "/similar",
    response_model=SimilarResponse,
    responses=LISTING_ERRORS,
    openapi_extra=PHOTO_PART,
)
async def similar(
    form: Annotated[ListingQuery, Depends(listing_query)], market: ModelDep, request: Request
) -> SimilarResponse:
    """The k listings most like a photo and/or text, optionally filtered, with scores."""
    answer = await call_model(
        market.similar_answer,
        image=form.image,
        text=form.text,
        k=form.k,
        filters=Filters(form.category, form.min_price, form.max_price),
    )
    log_similar(request, market, answer, form.image, form.text, form.price)
    return _response(market, answer.results, answer.kind)


@router.get(
    "/products/{product_id}/similar",
    response_model=SimilarResponse,
    responses=error_responses(404, 422, 503, why={404: "unknown product id"}),
)
async def more_like_this(
    product_id: str,
    market: ModelDep,
    settings: SettingsDep,
    k: Annotated[int | None, Query(description="number of results")] = None,
    category: str | None = None,
    min_price: Annotated[float | None, Query(ge=0)] = None,
    max_price: Annotated[float | None, Query(ge=0)] = None,
    *,
    request: Request,
) -> SimilarResponse:
    """More like this listing (itself excluded). Answered from the stored vector: no
    encoder runs, so this is the fast path. An empty price range answers no results."""
    try:
        results = market.similar_to_product(
            product_id,
            k=check_k(k, settings),
            filters=Filters(category, min_price, max_price),
        )
    except KeyError:
        raise HTTPException(404, f"unknown product id {product_id!r}") from None
    log_product_similar(request, market, results)
    return _response(market, results, "product")
