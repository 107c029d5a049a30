"""What is being served."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter

from marketplace.models.query import QUERY_KINDS, kind_slug
from serving.contract import MODEL_ERRORS
from serving.dependencies import ModelDep
from serving.schemas import ModelResponse

router = APIRouter(tags=["model"])
FIGURES = ("accuracy", "macro_f1", "top3_accuracy", "log_loss", "ece", "n")


def by_query_kind(metrics: dict[str, float], split: str = "test") -> dict[str, dict[str, float]]:
    """``test_image_text_accuracy`` ... regrouped as ``{"image+text": {"accuracy": ...}}``."""
    out: dict[str, dict[str, float]] = {}
    for kind in QUERY_KINDS:
        prefix = f"{split}_{kind_slug(kind)}_"
        figures = {f: metrics[prefix + f] for f in FIGURES if prefix + f in metrics}
        if figures:
            out[kind] = figures
    return out


@router.get("/model", response_model=ModelResponse, responses=MODEL_ERRORS)
async def model(market: ModelDep) -> ModelResponse:
    """Name, version, run, test metrics, index and model card of the loaded model."""
    info = market.info
    return ModelResponse(
        name=info.name,
        version=info.version,
        alias=info.alias,
        run_id=info.run_id,
        metrics=info.metrics,
        by_query_kind=by_query_kind(info.metrics),
        index_size=info.index_size,
        index_factory=info.index_factory,
        categories=list(market.categories),
        loaded_at=dt.datetime.fromtimestamp(info.loaded_at, dt.UTC).isoformat(),
        load_seconds=round(info.load_seconds, 3),
        description=info.description,
    )
