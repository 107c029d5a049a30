"""Category prediction and embeddings for a photo and/or a text."""

from __future__ import annotations

from fastapi import APIRouter, Request

from marketplace.inference import Listing
from marketplace.models.query import query_kind
from serving.dependencies import BatcherDep, ModelDep, SettingsDep
from serving.routers._common import LISTING_FORM, call_model, model_errors, model_ref
from serving.schemas import CategoryScore, EmbedResponse, PredictResponse
from serving.uploads import read_listing_form

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=PredictResponse, openapi_extra=LISTING_FORM)
async def predict(
    request: Request, market: ModelDep, settings: SettingsDep, batcher: BatcherDep
) -> PredictResponse:
    """Root category of a listing from its photo and/or text (and price, if known)."""
    form = await read_listing_form(request, settings)
    ranked = await model_errors(batcher.predict(market, Listing(form.image, form.text, form.price)))
    return PredictResponse(
        category=ranked[0][0],
        confidence=ranked[0][1],
        top_k=[CategoryScore(category=c, probability=p) for c, p in ranked[: form.k]],
        query=query_kind(form.text is not None, form.image is not None),
        model=model_ref(market),
    )


@router.post("/embed", response_model=EmbedResponse, openapi_extra=LISTING_FORM)
async def embed(request: Request, market: ModelDep, settings: SettingsDep) -> EmbedResponse:
    """The listing's vector in the similar-products space (what /similar searches with)."""
    form = await read_listing_form(request, settings)
    vector, kind = await call_model(market.embed, image=form.image, text=form.text)
    return EmbedResponse(
        vector=[round(float(v), 7) for v in vector],
        dim=len(vector),
        query=kind,
        space=market.index.meta.space,
        model=model_ref(market),
    )
