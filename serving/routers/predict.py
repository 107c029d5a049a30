"""Category prediction and embeddings for a photo and/or a text."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from marketplace.inference import Listing
from marketplace.models.query import query_kind
from serving.contract import LISTING_ERRORS, PHOTO_PART
from serving.dependencies import BatcherDep, ModelDep
from serving.routers._common import call_model, model_errors, model_ref
from serving.schemas import CategoryScore, EmbedResponse, PredictResponse
from serving.uploads import ListingQuery, ListingRoute, listing_query
from serving.watch import log_predict

router = APIRouter(
    tags=["predict"],
    route_class=ListingRoute,
    responses=LISTING_ERRORS,
)
QueryDep = Annotated[ListingQuery, Depends(listing_query)]


@router.post("/predict", response_model=PredictResponse, openapi_extra=PHOTO_PART)
async def predict(
    form: QueryDep, market: ModelDep, batcher: BatcherDep, request: Request
) -> PredictResponse:
    """Root category of a listing from its photo and/or text (and price, if known)."""
    listing = Listing(form.image, form.text, form.price)
    prediction = await model_errors(batcher.score(market, listing))
    ranked = prediction.ranking
    log_predict(request, market, listing, prediction)  # the prediction log, the shadow
    return PredictResponse(
        category=ranked[0][0],
        confidence=ranked[0][1],
        top_k=[CategoryScore(category=c, probability=p) for c, p in ranked[: form.k]],
        query=query_kind(form.text is not None, form.image is not None),
        model=model_ref(market),
    )


@router.post("/embed", response_model=EmbedResponse, openapi_extra=PHOTO_PART)
async def embed(form: QueryDep, market: ModelDep) -> EmbedResponse:
    """The listing's vector in the similar-products space (what /similar searches with)."""
    vector, kind = await call_model(market.embed, image=form.image, text=form.text)
    return EmbedResponse(
        vector=[round(float(v), 7) for v in vector],
        dim=len(vector),
        query=kind,
        space=market.index.meta.space,
        model=model_ref(market),
    )
