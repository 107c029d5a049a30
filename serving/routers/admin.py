"""Operations: swap in whatever the alias points to now."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from serving.dependencies import HolderDep, require_admin
from serving.schemas import ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post("/reload", response_model=ReloadResponse, responses={500: {"model": ReloadResponse}})
async def reload(holder: HolderDep) -> ReloadResponse | JSONResponse:
    """Load the model the alias points to now and swap it in atomically. If loading
    fails, the old model keeps serving and the response (500) says why."""
    outcome = await holder.reload()
    body = ReloadResponse(
        reloaded=outcome.reloaded,
        version=outcome.version,
        previous_version=outcome.previous_version,
        detail=outcome.detail,
    )
    if not outcome.reloaded:
        return JSONResponse(body.model_dump(), status_code=500)
    return body
