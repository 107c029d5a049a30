"""Live listings: put, read and delete a listing of the catalogue between index builds.

``PUT /products/{id}`` embeds the listing once with the served model (its category is
predicted from the same vectors unless the seller gives one), commits the change and its
encoder vectors to the catalogue log, and only then answers; the next similar-products
query of this process sees it, other processes within ``catalogue_poll_s``. A refused
change (bad token, bad field, bad photo) stores nothing: every check runs before the
commit, with /predict's checks and errors (413, 415, 422).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Path, Request, Response
from pydantic import Field, field_validator, model_validator

from marketplace.search.catalogue import DELETE, PUT
from serving.catalogue import CatalogueDep, LiveDep, commit_and_apply, require_catalogue_token
from serving.contract import LISTING_ERRORS, PHOTO_PART, error_responses
from serving.dependencies import ModelDep, SettingsDep
from serving.routers._common import call_model, model_ref
from serving.schemas import CategoryScore, ListingRecord, StoredListing
from serving.uploads import FormNumber, FormPhoto, ListingRoute, StrictForm, check_image

router = APIRouter(tags=["products"], route_class=ListingRoute)
# Blank as the published contract's ``\S`` pattern (ECMA-262) sees it: Python's
# ``str.split`` also splits on a few control characters (U+001C-U+001F, U+0085).
_BLANK = re.compile("^[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]*$")

ProductId = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
        description="letters, digits and . _ : - (at most 64)",
    ),
]
WRITE_ERRORS = error_responses(
    401,
    403,
    why={
        401: "missing or wrong bearer token (MARKETPLACE_CATALOGUE_TOKEN)",
        403: "listing changes are disabled (no MARKETPLACE_CATALOGUE_TOKEN)",
    },
)
LISTING_ANSWERS = {404: "unknown or deleted listing", 422: "invalid product id"}


class ProductForm(StrictForm):
    """A listing as a seller sends it (``multipart/form-data``; strings, as forms send)."""

    title: str = Field(description="the listing's title (required)")
    description: str | None = Field(None, description="the listing's description")
    price: FormNumber = Field(None, description="GBP, >= 0")
    location: str | None = Field(None, description="e.g. 'Leeds, West Yorkshire'")
    category: str | None = Field(
        None, description="root category; absent: the model's prediction is stored"
    )
    image: FormPhoto = Field(None, description="JPEG, PNG or WebP photo")

    @model_validator(mode="before")
    @classmethod
    def _title_required(cls, data: Any) -> Any:
        if isinstance(data, dict) and _BLANK.match(str(data.get("title") or "")):
            raise ValueError("title is required")
        return data

    @field_validator("title", "description", "location", "category", mode="before")
    @classmethod
    def _text(cls, value: Any, info: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{info.field_name} must be a form field, not a file")
        folded = " ".join((value or "").split())
        if not folded and info.field_name == "title" and value:
            return value  # characters Python counts as spaces and the contract does not
        return folded or None


@router.put(
    "/products/{product_id}",
    response_model=StoredListing,
    status_code=200,
    dependencies=[Depends(require_catalogue_token)],
    responses={
        200: {"description": "an existing listing changed"},
        201: {"model": StoredListing, "description": "a new listing"},
        **LISTING_ERRORS,
        **WRITE_ERRORS,
    },
    openapi_extra=PHOTO_PART,
)
async def put_product(
    product_id: ProductId,
    form: Annotated[ProductForm, File(media_type="multipart/form-data")],
    request: Request,
    response: Response,
    market: ModelDep,
    live: LiveDep,
    catalogue: CatalogueDep,
    settings: SettingsDep,
) -> StoredListing:
    """Publish or change a listing; answered once the change is durable in the catalogue
    log. Without ``category`` the model's prediction is stored. 201: new; 200: changed."""
    if live.market is not market:  # a reload swapped the model between the dependencies
        market = live.market
    for name in ("title", "description", "location"):
        value = getattr(form, name)
        if value is not None and len(value) > settings.max_text_chars:
            raise HTTPException(
                422, f"{name} is {len(value)} characters; the limit is {settings.max_text_chars}"
            )
    if form.category is not None and form.category not in market.categories:
        raise HTTPException(
            422, f"unknown category {form.category!r}; one of: {', '.join(market.categories)}"
        )
    image = None if form.image is None else check_image(await form.image.read(), settings)
    embedded, ranked = await call_model(
        live.embed,
        title=form.title,
        description=form.description,
        price=form.price,
        image=image,
    )
    category, source = (form.category, "seller") if form.category else (ranked[0][0], "model")
    fields = {
        "title": form.title,
        "description": form.description,
        "price": form.price,
        "location": form.location,
        "category": category,
        "category_source": source,
    }
    written = await commit_and_apply(
        request,
        market,
        partial(
            catalogue.append,
            product_id,
            PUT,
            fields=fields,
            image=image,
            vectors=embedded.cache_rows(),
        ),
        embedded.stored,
    )
    existed = written.existed_in_log
    if existed is None:
        existed = market.index.position(product_id) is not None
    response.status_code = 200 if existed else 201
    return StoredListing(
        product_id=product_id,
        **fields,  # type: ignore[arg-type]
        image_id=product_id if image is not None else None,
        live=True,
        seq=written.seq,
        updated_at=written.ts,
        predicted_category=ranked[0][0],
        confidence=ranked[0][1],
        top_k=[CategoryScore(category=c, probability=p) for c, p in ranked[:3]],
        model=model_ref(market),
    )


@router.delete(
    "/products/{product_id}",
    status_code=204,
    response_class=Response,
    dependencies=[Depends(require_catalogue_token)],
    responses={**error_responses(404, 422, 503, why=LISTING_ANSWERS), **WRITE_ERRORS},
)
async def delete_product(
    product_id: ProductId, request: Request, live: LiveDep, catalogue: CatalogueDep
) -> Response:
    """Take a listing (built or live) out of the catalogue: no similar-products answer
    returns it once this answers 204."""
    if not live.exists(product_id):
        raise HTTPException(404, f"unknown product id {product_id!r}")
    await commit_and_apply(request, live.market, partial(catalogue.append, product_id, DELETE))
    return Response(status_code=204)


@router.get(
    "/products/{product_id}",
    response_model=ListingRecord,
    responses=error_responses(404, 422, 503, why=LISTING_ANSWERS),
)
async def get_product(product_id: ProductId, live: LiveDep) -> ListingRecord:
    """The listing as served now: built by the pipeline or live."""
    record = live.record(product_id)
    if record is None:
        raise HTTPException(404, f"unknown product id {product_id!r}")
    return ListingRecord(**record)
