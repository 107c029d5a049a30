"""Typed, strict access to ``params.yaml``.

Every tunable of every stage lives in ``params.yaml``, one section per stage, and loads into
the pydantic model of that section below: frozen, strict about types (``5.5`` is not an
integer, ``"yes"`` is not a boolean; an integer is accepted where a number is expected),
unknown keys forbidden (usually a typo that would otherwise be silently ignored), no key
optional, and each range written beside its field. Errors name the full dotted key, e.g.
``clean_images.sise: unknown key``. Reading params imports pydantic and yaml, never torch.

To add a param: add the field (with its range) to its section's model here, and the key to
``params.yaml``; a stage that lists the whole section in ``dvc.yaml`` picks it up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_PARAMS_PATH = Path("params.yaml")

# Kept here (not imported from marketplace.features.encoders) so reading params never imports torch;
# tests/unit/test_encoders.py checks it names exactly the registered backbones.
ImageEncoderName = Literal["efficientnet_lite0", "efficientnet_lite2", "resnet50", "resnet18"]
_N = "[1-9][0-9]*"
# Flat | HNSW<M> | [OPQ<m>[_<d>],]IVF<nlist>,<Flat | SQ8 | SQ4 | SQfp16 | PQ<m>[x<bits>]>
IndexFactory = Annotated[
    str,
    Field(
        pattern=rf"^(Flat|HNSW{_N}|(OPQ{_N}(_{_N})?,)?IVF{_N},(Flat|SQ8|SQ4|SQfp16|PQ{_N}(x{_N})?))$"
    ),
]
Fraction = Annotated[float, Field(ge=0, lt=1)]  # in [0, 1)


class ConfigError(ValueError):
    """``params.yaml`` does not match the expected schema; the message names the key."""


class Section(BaseModel):
    """One section of ``params.yaml``: frozen, strict, every key required, no unknown key."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class CleanTabularParams(Section):
    """Tunables of the ``clean_tabular`` stage."""

    # Prices above this (in GBP) are placeholders such as £10,000,000: reported and set to
    # null so they cannot dominate a price model. The listing itself is kept.
    price_max: float = Field(gt=0)
    # Which row wins when a product id appears more than once.
    keep_duplicate: Literal["first", "last"]


class CleanImagesParams(Section):
    """Tunables of the ``clean_images`` stage."""

    size: int = Field(ge=8, le=4096)  # side of the square canvas the longest side fits into
    jpeg_quality: int = Field(ge=1, le=95)  # quality of the cleaned JPEGs
    workers: int = Field(ge=0)  # processes; 0 means one per CPU core


class SplitParams(Section):
    """Tunables of the ``split`` stage: product-grouped, category-stratified ratios."""

    seed: int
    val_fraction: Fraction
    test_fraction: Fraction

    @model_validator(mode="after")
    def _train_keeps_some(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


class EmbedImagesParams(Section):
    """Tunables of the ``embed_images`` stage (the frozen image encoder)."""

    encoder: ImageEncoderName
    image_size: int = Field(ge=32, le=1024)  # encoder input side; canvases are resized to it
    batch_size: int = Field(ge=1)
    channels_last: bool
    bf16: bool  # bf16 autocast: faster on CPUs with native bf16


class EmbedTextParams(Section):
    """Tunables of the ``embed_text`` stage (the frozen text encoder)."""

    encoder: str  # minilm | any Hugging Face model name
    max_tokens: int = Field(ge=8, le=512)  # title + description truncated to this many tokens
    batch_size: int = Field(ge=1)
    bf16: bool  # bf16 autocast


class TfidfParams(Section):
    """Tunables of the ``tfidf`` stage: hashed TF-IDF of the listing text, which the text
    and combined models read (word 1-2-grams and character 3-5-grams, one bucket each)."""

    word_buckets: int = Field(ge=1)
    char_buckets: int = Field(ge=1)


class BaselinesParams(Section):
    """Tunables of the ``baselines`` stage (the seed's simple models, for parity)."""

    seed: int
    price_text_features: int  # title TF-IDF features in the price regression
    price_ridge_alpha: float
    svc_image_size: int = Field(ge=4, le=128)  # side of the downscaled image the SVC sees
    svc_c: float
    # Cap on SVC training images (its cost grows quadratically); at least one per category.
    svc_max_train: int = Field(ge=13)
    # Cap on the test images it is scored on (a seeded sample; its prediction is linear in
    # them and ~8 ms each): a parity figure, not worth half an hour at a million products.
    svc_max_test: int = Field(ge=1)


class HeadParams(Section):
    """Architecture and optimisation of one classifier head."""

    hidden_dim: int = Field(ge=0)  # 0 = linear
    dropout: Fraction
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    epochs: int = Field(ge=1)  # upper bound; early stopping on val accuracy decides
    patience: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    label_smoothing: Fraction
    # 0: train from scratch. N > 0: start from the weights of the registry's production
    # version of this model when it has the same architecture and inputs (categories,
    # encoders, TF-IDF buckets) and train at most N epochs; otherwise from scratch. For a
    # large catalogue rebuilt after a small churn, where a cold head costs hours; the
    # result then depends on which version was in production (logged as ``warm_start``).
    warm_epochs: int = Field(ge=0)


class FinetuneParams(Section):
    """Optimisation of end-to-end fine-tuning (an encoder's top with its head)."""

    finetune_lr: float = Field(gt=0)  # AdamW learning rate for the encoder and the head
    finetune_epochs: int = Field(ge=1)  # upper bound; early stopping on val accuracy decides
    finetune_patience: int = Field(ge=1)
    finetune_batch_size: int = Field(ge=2)


class VisionHeadParams(FinetuneParams, HeadParams):  # fields: the head's first
    """The vision head, and optional end-to-end fine-tuning of the image encoder's top.

    With ``finetune_blocks`` > 0, after the head has trained on the cached embeddings the
    last ``finetune_blocks`` stages of the encoder (EfficientNet-Lite: the 1x1 conv head,
    then the MBConv blocks from the top) are trained together with the head on the cleaned
    photos, with augmentation; 0 (the default) keeps the encoder frozen.
    """

    # The upper bound depends on the encoder (Lite0: 17 stages, Lite2: 22); it says so.
    finetune_blocks: int = Field(ge=0)
    augment: bool  # random resized crop, horizontal flip and colour jitter while fine-tuning


class TextHeadParams(FinetuneParams, HeadParams):  # fields: the head's first
    """The text head, and optional fine-tuning of the text encoder's last layers.

    With ``finetune_layers`` > 0, after the head has trained on the cached embeddings the
    last ``finetune_layers`` transformer layers are trained with the head on the listing
    texts; 0 (the default) keeps the encoder frozen.
    """

    finetune_layers: int = Field(ge=0, le=48)


class CombinedHeadParams(HeadParams):
    """The fusion head drops the image branch for a share of training rows, and weighs the
    per-branch (photo-only, text-only) loss terms that make each query kind stand alone."""

    modality_dropout: Fraction
    aux_weight: float = Field(ge=0)


class TrainParams(Section):
    """Tunables of the ``train_*`` stages."""

    seed: int
    vision: VisionHeadParams
    text: TextHeadParams
    combined: CombinedHeadParams


class RegistryParams(Section):
    """Registered model names, one per classifier."""

    vision: str
    text: str
    combined: str


class IndexParams(Section):
    """Tunables of the ``index`` stage (FAISS similar-products index)."""

    # FAISS factory string, inner product: "Flat" (exact), "HNSW<M>", "IVF<nlist>,Flat", or
    # compressed for millions of products: "IVF<nlist>,SQ8" (1 byte a dimension),
    # "IVF<nlist>,PQ<m>", "OPQ<m>,IVF<nlist>,PQ<m>" (m bytes a vector); BENCHMARKS.md compares.
    factory: IndexFactory
    nprobe: int = Field(ge=1)  # IVF: inverted lists visited per query
    ef_search: int = Field(ge=1)  # HNSW: candidate list size per query
    ef_construction: int = Field(ge=1)  # HNSW: candidate list size while building
    eval_k: int = Field(ge=1, le=100)  # precision@k of same-category neighbours, per query kind
    # At most this many val products tune the photo-and-text weight and this many test
    # products are scored (a fixed sample by id hash beyond that): each is three queries, and
    # an IVF index of a million products answers ~600 a second.
    eval_queries: int = Field(ge=1)
    # Photo-and-text queries score w * cos(text) + (1 - w) * cos(photo); the index stage
    # keeps the w of these with the best precision@k on the validation products. (A YAML
    # list: the tuple itself is not strict, its weights are.)
    text_weights: tuple[Annotated[float, Strict(), Field(ge=0, le=1)], ...] = Field(
        strict=False, min_length=1
    )
    neighbours: int = Field(ge=0)  # "more like this" lists precomputed per product; 0: none
    # Listing photos for the search page, stored in the index folder
    # (marketplace.search.thumbnails):
    # longest side in pixels (0: no thumbnails), encoder quality, and image type.
    thumbnail_size: int = Field(ge=0, le=1024)
    thumbnail_quality: int = Field(ge=1, le=100)
    thumbnail_format: Literal["webp", "jpeg"]

    @field_validator("thumbnail_size")
    @classmethod
    def _thumbnail_size(cls, value: int) -> int:
        if value != 0 and value < 16:
            raise ValueError("must be 0 (no thumbnails) or in 16..1024")
        return value


class PromoteLiveParams(Section):
    """Live evidence the gate can require (``marketplace.mlops.evidence``): the sellers'
    feedback on the challenger's answers (as a canary, or scored in shadow) and on
    production's, in the prediction log, over the last ``window_days``."""

    required: bool  # false: the gate reads test metrics only
    min_feedback: int = Field(ge=1)  # feedback rows on the challenger's answers, at least
    tolerance: float = Field(ge=0, le=1)  # its live accuracy may be this much under production's
    window_days: float = Field(gt=0)


class PromoteParams(Section):
    """The gate ``marketplace.mlops.promotion`` applies before moving the ``production`` alias."""

    alias: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    metric: str  # a model version tag, e.g. test_accuracy; higher is better
    tolerance: float = Field(ge=0)  # the challenger may be this much worse and pass
    require_index: bool  # refuse versions without a FAISS index (the serving model needs one)
    # Required in params.yaml like every key; the default (not required) only spares code
    # that builds a gate by hand (tests, the stack) from spelling it out.
    live: PromoteLiveParams = PromoteLiveParams(
        required=False, min_feedback=200, tolerance=0.02, window_days=14
    )


class MonitorParams(Section):
    """The drift monitor (``python -m marketplace.mlops.monitor``): which logged answers it
    reads, and the thresholds past which it alerts (exit status 1). Each check runs per
    query kind on the served answers of the window; a kind with fewer than ``min_rows``
    answers is reported but not judged. Defaults measured in BENCHMARKS.md (drift monitor)."""

    window_hours: float = Field(gt=0)  # answers logged in the last N hours...
    max_rows: int = Field(ge=1)  # ...at most this many, the newest
    min_rows: int = Field(ge=2)  # answers a query kind needs to be judged
    reference_size: int = Field(ge=10)  # training rows sampled into the reference at training
    # Jensen-Shannon distance (base 2, 0..1) of the predicted-category mix to the training
    # labels, above the distance a window of that size shows by chance
    category_distance: Annotated[float, Field(gt=0, le=1)]
    # Cross-validated ROC AUC of a classifier telling logged input vectors from training ones
    embedding_auc: Annotated[float, Field(gt=0.5, le=1)]
    text_length_ks: Annotated[float, Field(gt=0, le=1)]  # KS statistic of text lengths
    confidence_ks: Annotated[float, Field(gt=0, le=1)]  # KS statistic of top-1 probabilities (val)
    kind_share_distance: Annotated[float, Field(gt=0, le=1)]  # total variation of the kind mix


class ComputeParams(Section):
    """Where the heavy stages run (``marketplace.compute.batches``): ``local``, in the stage's own
    process, or ``ray``, on the cluster ``RAY_ADDRESS`` names (unset: a local Ray). Either
    way a stage writes the same files, so this is not a DVC param of any stage."""

    backend: Literal["local", "ray"]
    batch_size: int = Field(ge=1)  # items per Ray Data batch (one call of an actor)
    concurrency: int = Field(ge=1)  # Ray actors, one model each (or neighbour-list shards)
    cpus_per_worker: int = Field(ge=1)  # CPUs (and torch threads) each actor reserves


class Params(Section):
    """The whole of ``params.yaml``."""

    clean_tabular: CleanTabularParams
    clean_images: CleanImagesParams
    split: SplitParams
    embed_images: EmbedImagesParams
    embed_text: EmbedTextParams
    tfidf: TfidfParams
    baselines: BaselinesParams
    train: TrainParams
    registry: RegistryParams
    index: IndexParams
    promote: PromoteParams
    compute: ComputeParams
    monitor: MonitorParams

    @model_validator(mode="before")
    @classmethod
    def _promote_live_written(cls, data: Any) -> Any:
        # ``promote.live`` has a default for code only; params.yaml must spell it out.
        promote = data.get("promote") if isinstance(data, dict) else None
        if isinstance(promote, dict) and "live" not in promote:
            raise ValueError("promote.live: missing key")
        return data


def _problem(error: dict[str, Any]) -> str:
    """One pydantic error as ``dotted.key: what is wrong``."""
    key = ".".join(str(part) for part in error["loc"]) or "params.yaml"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: missing key"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error["input"], dict):  # a check across a section's keys
        return f"{key}: {message}"
    return f"{key}: {message} (got {error['input']!r})"


def params_from_dict(data: Any) -> Params:
    """Validate an already-parsed params mapping (used by tests and ``load_params``)."""
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(e) for e in exc.errors())) from None


def load_params(path: Path | str = DEFAULT_PARAMS_PATH) -> Params:
    """Read and validate ``params.yaml``; raises ``ConfigError`` naming the offending key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return params_from_dict(data)
