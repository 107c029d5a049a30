"""What the routers depend on, injected (tests override these, not globals).

They are ``async def`` on purpose: none of them blocks, and FastAPI runs a plain ``def``
dependency in its thread pool, a thread hop per dependency per request (it more than
doubled the cost of ``GET /products/{id}/similar``).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from marketplace.inference import Marketplace
from serving.batching import PredictBatcher
from serving.settings import Settings
from serving.state import ModelHolder

_bearer = HTTPBearer(auto_error=False)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def get_batcher(request: Request) -> PredictBatcher:
    return request.app.state.batcher


async def get_model(request: Request) -> Marketplace:
    """The model this request uses, fixed for its whole duration; 503 until one is loaded.
    With a canary (``MARKETPLACE_CANARY_PERCENT``), its share of clients gets that version.

    Reads the holder itself rather than through ``get_holder``: every nested dependency
    costs FastAPI a full parameter solve on each request, and this one is on every call.
    """
    holder: ModelHolder = request.app.state.holder
    model = holder.current
    if model is None:
        detail = "no model loaded yet"
        if holder.last_error:
            detail += f"; last attempt failed: {holder.last_error}"
        raise HTTPException(503, detail)
    watch = request.app.state.watch
    if watch.canary_percent:  # this client's share may be answered by the canary version
        return watch.route(request, model)
    return model


async def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Bearer-token check for /admin; disabled (403) when no token is configured."""
    if settings.admin_token is None:
        raise HTTPException(403, "admin endpoints are disabled: set MARKETPLACE_ADMIN_TOKEN")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    expected = settings.admin_token.get_secret_value().encode()
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
ModelDep = Annotated[Marketplace, Depends(get_model)]
BatcherDep = Annotated[PredictBatcher, Depends(get_batcher)]
