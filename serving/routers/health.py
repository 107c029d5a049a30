"""Liveness and readiness, for load balancers and the Docker HEALTHCHECK."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serving.dependencies import HolderDep
from serving.observability import RegistryProbe
from serving.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health)
async def live() -> Health:
    """The process is up (always 200)."""
    return Health(status="alive")


@router.get("/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(holder: HolderDep, request: Request) -> Health | JSONResponse:
    """200 once a model and its index are loaded; 503 (with the reason) until then.

    A registry that went away does not make the service unready (it serves the model it
    loaded); ``registry`` says whether the tracking server answers."""
    probe: RegistryProbe | None = getattr(request.app.state, "registry_probe", None)
    registry = None
    if probe is not None and probe.uri is not None:
        registry = (await probe.problem()) or "reachable"
    if holder.current is None:
        body = Health(status="loading", detail=holder.last_error, registry=registry)
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ready", model_version=holder.version, registry=registry)
