"""Feedback on an answer: the category a seller kept or chose, the product a shopper clicked.

Keyed by the answer's request id (the ``X-Request-ID`` every response carries). The row
is committed to the prediction log's database before the 204, and a category is scored
against every logged answer of that request (served and shadow) into
``marketplace_live_accuracy``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from serving.contract import error_responses
from serving.dependencies import ModelDep
from serving.watch import Watch

router = APIRouter(tags=["feedback"])


def _one_or_both(schema: dict[str, Any]) -> None:
    """The published schema says what the validator checks: a category, a click or both,
    each a string when sent (not null)."""
    for name in ("category", "clicked_product_id"):
        field = schema["properties"][name]
        string = next(s for s in field.pop("anyOf") if s.get("type") == "string")
        field.pop("default", None)
        field.update(string)
    schema["anyOf"] = [{"required": ["category"]}, {"required": ["clicked_product_id"]}]


class FeedbackRequest(BaseModel):
    """What the seller or shopper did with an answer: a category and/or a clicked product."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_or_both)

    request_id: str = Field(min_length=1, max_length=64, description="the answer's X-Request-ID")
    category: str | None = Field(
        None, max_length=64, description="the category the seller kept or chose (/predict)"
    )
    clicked_product_id: str | None = Field(
        None, min_length=1, max_length=64, description="the product clicked (/similar)"
    )

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.category is None and self.clicked_product_id is None:
            raise ValueError("send a 'category', a 'clicked_product_id', or both")
        return self


@router.post(
    "/feedback",
    status_code=204,
    response_class=Response,
    responses=error_responses(
        400,
        404,
        422,
        503,
        why={
            400: "the body is not JSON",
            404: "no logged answer has this request id",
            422: "unknown category, or neither field",
            503: "the prediction log is off, or its database is down",
        },
    ),
)
async def feedback(body: FeedbackRequest, request: Request, market: ModelDep) -> Response:
    """Store feedback on a logged answer (durable when the 204 returns)."""
    watch: Watch = request.app.state.watch
    if watch.log is None:
        raise HTTPException(503, "the prediction log is off (MARKETPLACE_PREDICTION_LOG=false)")
    answers = await run_in_threadpool(watch.answers, body.request_id)
    if answers is None:
        raise HTTPException(503, "the prediction log is behind (its database is slow or down)")
    if not answers:
        raise HTTPException(404, f"no logged answer has request id {body.request_id!r}")
    if body.category is not None and body.category not in market.categories:
        raise HTTPException(
            422, f"unknown category {body.category!r}; expected one of {list(market.categories)}"
        )
    await run_in_threadpool(
        watch.store_feedback, body.request_id, body.category, body.clicked_product_id, answers
    )
    return Response(status_code=204)
