"""Typed responses of the API (what OpenAPI documents and clients can rely on)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    name: str
    version: str


class IndexRef(BaseModel):
    model_version: str = Field(description="the model version whose encoders built the index")
    size: int
    factory: str


class CategoryScore(BaseModel):
    category: str
    probability: float


class PredictResponse(BaseModel):
    category: str
    confidence: float
    top_k: list[CategoryScore]
    query: str = Field(description="text, image or image+text: what the prediction used")
    model: ModelRef


class EmbedResponse(BaseModel):
    vector: list[float]
    dim: int
    query: str
    space: str
    model: ModelRef


class Product(BaseModel):
    product_id: str
    title: str
    price: float | None
    category: str
    location: str | None
    image_id: str | None
    score: float = Field(description="cosine similarity in the index space (see README)")


class SimilarResponse(BaseModel):
    results: list[Product]
    query: str
    model: ModelRef
    index: IndexRef


class ModelResponse(BaseModel):
    name: str
    version: str
    alias: str | None
    run_id: str | None
    metrics: dict[str, float]
    by_query_kind: dict[str, dict[str, float]] = Field(
        description="test-split figures per query kind (image, text, image+text): accuracy, "
        "macro_f1, top3_accuracy, log_loss, ece, n"
    )
    index_size: int
    index_factory: str
    categories: list[str]
    loaded_at: str
    load_seconds: float
    description: str | None = Field(
        None,
        description="the version's model card (Markdown): data version, params, per-kind "
        "test metrics and calibration, intended use and limits, links to its runs",
    )


class Health(BaseModel):
    status: str
    model_version: str | None = None
    detail: str | None = None
    registry: str | None = Field(
        None,
        description="'reachable', or why the MLflow registry is not (the loaded model "
        "keeps serving); absent where the service was not given a registry to probe",
    )


class ReloadResponse(BaseModel):
    reloaded: bool
    version: str | None
    previous_version: str | None
    detail: str


class ListingRecord(BaseModel):
    """A listing as the catalogue serves it now: built by the pipeline or live (put
    through ``PUT /products/{id}`` since)."""

    product_id: str
    title: str
    description: str | None = Field(None, description="live listings only")
    price: float | None
    location: str | None
    category: str = Field(description="root category: the seller's, or the model's")
    category_source: str | None = Field(
        None, description="seller or model (live listings); null for built ones"
    )
    image_id: str | None = Field(description="set when the listing has a photo")
    live: bool = Field(description="put through the API since the index was built")
    seq: int | None = Field(None, description="the catalogue log row that put it (live)")
    updated_at: float | None = Field(None, description="Unix seconds it was acknowledged")


class StoredListing(ListingRecord):
    """What ``PUT /products/{id}`` stored, with the serving model's prediction."""

    predicted_category: str
    confidence: float
    top_k: list[CategoryScore]
    model: ModelRef
