"""Shared by the routers that take a listing: model-call errors and the model reference."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from marketplace.data.images import ImageError
from marketplace.inference import Marketplace
from serving.schemas import ModelRef

T = TypeVar("T")


async def call_model(function: Callable[..., T], **kwargs: Any) -> T:
    """Run model code in a worker thread; bad photos and inputs become 422."""
    return await model_errors(run_in_threadpool(function, **kwargs))


async def model_errors(call: Awaitable[T]) -> T:
    """Await model code; bad photos become 422 with their reason. Other input errors
    (``InputError``) are 422 and anything else 500 through the app's handlers
    (serving/errors.py): a ``ValueError`` from inside the model is a bug, not bad input."""
    try:
        return await call
    except ImageError as exc:
        raise HTTPException(422, f"unreadable image ({exc.reason}): {exc.detail}") from None


def model_ref(market: Marketplace) -> ModelRef:
    return ModelRef(name=market.info.name, version=market.info.version)
