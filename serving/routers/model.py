"""What is being served."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter

from serving.dependencies import ModelDep
from serving.schemas import ModelResponse

router = APIRouter(tags=["model"])


@router.get("/model", response_model=ModelResponse)
async def model(market: ModelDep) -> ModelResponse:
    """Name, version, run, test metrics and index of the loaded model."""
    info = market.info
    return ModelResponse(
        name=info.name,
        version=info.version,
        alias=info.alias,
        run_id=info.run_id,
        metrics=info.metrics,
        index_size=info.index_size,
        index_factory=info.index_factory,
        categories=list(market.categories),
        loaded_at=dt.datetime.fromtimestamp(info.loaded_at, dt.UTC).isoformat(),
        load_seconds=round(info.load_seconds, 3),
    )
