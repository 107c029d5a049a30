"""Operations: swap in whatever the alias points to now."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from serving.contract import ADMIN_ERRORS
from serving.dependencies import HolderDep, require_admin
from serving.schemas import ReloadResponse

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ERRORS,
)


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        500: {"model": ReloadResponse, "description": "the load failed; the old model serves"},
        503: {"model": ReloadResponse, "description": "the registry is unreachable"},
    },
)
async def reload(holder: HolderDep, request: Request) -> ReloadResponse | JSONResponse:
    """Load the model the alias points to now and swap it in atomically. If loading
    fails, the old model keeps serving and the response (500) says why; if the registry
    does not answer, nothing is tried (503, with the reason)."""
    probe = getattr(request.app.state, "registry_probe", None)
    if probe is not None and (problem := await probe.problem()):
        body = ReloadResponse(
            reloaded=False,
            version=holder.version,
            previous_version=holder.version,
            detail=f"{problem}; still serving version {holder.version}",
        )
        return JSONResponse(body.model_dump(), status_code=503)
    outcome = await holder.reload()
    await request.app.state.watch.reload_second()  # the shadow/canary alias may have moved
    body = ReloadResponse(
        reloaded=outcome.reloaded,
        version=outcome.version,
        previous_version=outcome.previous_version,
        detail=outcome.detail,
    )
    if not outcome.reloaded:
        return JSONResponse(body.model_dump(), status_code=500)
    return body
