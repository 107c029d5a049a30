"""Typed, strict access to ``params.yaml``.

Every tunable of every stage lives in ``params.yaml``, one section per stage. This module
turns it into frozen dataclasses and refuses anything it does not expect: an unknown key
(usually a typo that would otherwise be silently ignored), a missing key, or a value of
the wrong type. Errors name the full dotted key, e.g. ``clean_images.size``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

DEFAULT_PARAMS_PATH = Path("params.yaml")


class ConfigError(ValueError):
    """``params.yaml`` does not match the expected schema; the message names the key."""


@dataclass(frozen=True)
class CleanTabularParams:
    """Tunables of the ``clean_tabular`` stage."""

    # Prices above this (in GBP) are placeholders such as £10,000,000: reported and set to
    # null so they cannot dominate a price model. The listing itself is kept.
    price_max: float
    # Which row wins when a product id appears more than once.
    keep_duplicate: Literal["first", "last"]


@dataclass(frozen=True)
class CleanImagesParams:
    """Tunables of the ``clean_images`` stage."""

    size: int  # side of the square black canvas the longest side is fitted into
    jpeg_quality: int  # 1..95, quality of the cleaned JPEGs
    workers: int  # processes; 0 means one per CPU core


@dataclass(frozen=True)
class SplitParams:
    """Tunables of the ``split`` stage: product-grouped, category-stratified ratios."""

    seed: int
    val_fraction: float
    test_fraction: float


@dataclass(frozen=True)
class EmbedImagesParams:
    """Tunables of the ``embed_images`` stage (the frozen image encoder)."""

    encoder: str  # efficientnet_lite2 | efficientnet_lite0 | resnet50 | resnet18
    image_size: int  # encoder input side; canvases are resized to it
    batch_size: int
    channels_last: bool
    bf16: bool  # bf16 autocast: faster on CPUs with native bf16


@dataclass(frozen=True)
class EmbedTextParams:
    """Tunables of the ``embed_text`` stage (the frozen text encoder)."""

    encoder: str  # minilm | any Hugging Face model name
    max_tokens: int  # title + description truncated to this many tokens
    batch_size: int
    bf16: bool  # bf16 autocast


@dataclass(frozen=True)
class BaselinesParams:
    """Tunables of the ``baselines`` stage (the seed's simple models, for parity)."""

    seed: int
    price_text_features: int  # title TF-IDF features in the price regression
    price_ridge_alpha: float
    svc_image_size: int  # side of the downscaled image the SVC sees
    svc_c: float
    svc_max_train: int  # cap on SVC training images (its cost grows quadratically)


@dataclass(frozen=True)
class HeadParams:
    """Architecture and optimisation of one classifier head."""

    hidden_dim: int  # 0 = linear
    dropout: float
    lr: float
    weight_decay: float
    epochs: int  # upper bound; early stopping on val accuracy decides
    patience: int
    batch_size: int
    label_smoothing: float


@dataclass(frozen=True)
class VisionHeadParams(HeadParams):
    """The vision head, and optional end-to-end fine-tuning of the image encoder's top.

    With ``finetune_blocks`` > 0, after the head has trained on the cached embeddings the
    last ``finetune_blocks`` stages of the encoder (EfficientNet-Lite: the 1x1 conv head,
    then the MBConv blocks from the top) are trained together with the head on the cleaned
    photos, with augmentation; 0 (the default) keeps the encoder frozen.
    """

    finetune_blocks: int
    finetune_lr: float  # AdamW learning rate for the encoder and the head while fine-tuning
    finetune_epochs: int  # upper bound; early stopping on val accuracy decides
    finetune_patience: int
    finetune_batch_size: int
    augment: bool  # random resized crop, horizontal flip and colour jitter while fine-tuning


@dataclass(frozen=True)
class TextHeadParams(HeadParams):
    """The text head, and optional fine-tuning of the text encoder's last layers.

    With ``finetune_layers`` > 0, after the head has trained on the cached embeddings the
    last ``finetune_layers`` transformer layers are trained with the head on the listing
    texts; 0 (the default) keeps the encoder frozen.
    """

    finetune_layers: int
    finetune_lr: float
    finetune_epochs: int
    finetune_patience: int
    finetune_batch_size: int


@dataclass(frozen=True)
class CombinedHeadParams(HeadParams):
    """The fusion head drops the image branch for a share of training rows, and weighs the
    per-branch (photo-only, text-only) loss terms that make each query kind stand alone."""

    modality_dropout: float
    aux_weight: float


@dataclass(frozen=True)
class TfidfParams:
    """Tunables of the ``tfidf`` stage: hashed TF-IDF of the listing text, which the text
    and combined models read (word 1-2-grams and character 3-5-grams, one bucket each)."""

    word_buckets: int
    char_buckets: int


@dataclass(frozen=True)
class TrainParams:
    """Tunables of the ``train_*`` stages."""

    seed: int
    vision: VisionHeadParams
    text: TextHeadParams
    combined: CombinedHeadParams


@dataclass(frozen=True)
class RegistryParams:
    """Registered model names, one per classifier."""

    vision: str
    text: str
    combined: str


@dataclass(frozen=True)
class IndexParams:
    """Tunables of the ``index`` stage (FAISS similar-products index)."""

    # FAISS factory string: "Flat" (exact), "IVF<nlist>,Flat" or "HNSW<M>"; inner product.
    factory: str
    nprobe: int  # IVF: inverted lists visited per query
    ef_search: int  # HNSW: candidate list size per query
    ef_construction: int  # HNSW: candidate list size while building
    eval_k: int  # precision@k of same-category neighbours, reported per query kind
    # Photo-and-text queries score w * cos(text) + (1 - w) * cos(photo); the index stage
    # keeps the w of these with the best precision@k on the validation products.
    text_weights: tuple[float, ...]
    neighbours: int  # "more like this" lists precomputed per product; 0: search per request
    # Listing photos for the search page, stored in the index folder (marketplace.thumbnails):
    # longest side in pixels (0: no thumbnails), encoder quality, and image type.
    thumbnail_size: int
    thumbnail_quality: int
    thumbnail_format: Literal["webp", "jpeg"]

    def __post_init__(self) -> None:
        if not self.text_weights or not all(0.0 <= w <= 1.0 for w in self.text_weights):
            raise ValueError("index.text_weights: one or more weights in [0, 1]")
        if self.neighbours < 0:
            raise ValueError("index.neighbours must be >= 0")


@dataclass(frozen=True)
class PromoteParams:
    """The gate ``pipeline.promote`` applies before moving the ``production`` alias."""

    alias: str
    metric: str  # a model version tag, e.g. test_accuracy; higher is better
    tolerance: float  # the challenger may be this much worse than production and pass
    require_index: bool  # refuse versions without a FAISS index (the serving model needs one)


@dataclass(frozen=True)
class Params:
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


_Validator = typing.Callable[[Any], str | None]
# Kept here (not imported from marketplace.models) so reading params never imports torch.
_IMAGE_ENCODERS = (
    "efficientnet_lite0",
    "efficientnet_lite2",
    "resnet50",
    "resnet18",
)
_INDEX_FACTORY = re.compile(r"Flat|IVF[1-9][0-9]*,Flat|HNSW[1-9][0-9]*")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]*")

# Range checks that the type alone cannot express: key -> check returning an error or None.
_CHECKS: dict[str, _Validator] = {
    "clean_tabular.price_max": lambda v: None if v > 0 else "must be > 0",
    "clean_images.size": lambda v: None if 8 <= v <= 4096 else "must be in 8..4096",
    "clean_images.jpeg_quality": lambda v: None if 1 <= v <= 95 else "must be in 1..95",
    "clean_images.workers": lambda v: None if v >= 0 else "must be >= 0 (0 = all cores)",
    "split.val_fraction": lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
    "split.test_fraction": lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
    "embed_images.encoder": lambda v: (
        None if v in _IMAGE_ENCODERS else f"must be one of {_IMAGE_ENCODERS}"
    ),
    "embed_images.image_size": lambda v: None if 32 <= v <= 1024 else "must be in 32..1024",
    "embed_images.batch_size": lambda v: None if v >= 1 else "must be >= 1",
    "embed_text.max_tokens": lambda v: None if 8 <= v <= 512 else "must be in 8..512",
    "embed_text.batch_size": lambda v: None if v >= 1 else "must be >= 1",
    "tfidf.word_buckets": lambda v: None if v >= 1 else "must be >= 1",
    "tfidf.char_buckets": lambda v: None if v >= 1 else "must be >= 1",
    "baselines.svc_image_size": lambda v: None if 4 <= v <= 128 else "must be in 4..128",
    "baselines.svc_max_train": lambda v: None if v >= 13 else "must be >= 13",
    "index.factory": lambda v: (
        None if _INDEX_FACTORY.fullmatch(v) else 'must be "Flat", "IVF<nlist>,Flat" or "HNSW<M>"'
    ),
    "index.nprobe": lambda v: None if v >= 1 else "must be >= 1",
    "index.ef_search": lambda v: None if v >= 1 else "must be >= 1",
    "index.ef_construction": lambda v: None if v >= 1 else "must be >= 1",
    "index.eval_k": lambda v: None if 1 <= v <= 100 else "must be in 1..100",
    "index.thumbnail_size": lambda v: (
        None if v == 0 or 16 <= v <= 1024 else "must be 0 (none) or in 16..1024"
    ),
    "index.thumbnail_quality": lambda v: None if 1 <= v <= 100 else "must be in 1..100",
    "promote.alias": lambda v: None if _ALIAS.fullmatch(v) else "must match [a-z][a-z0-9_-]*",
    "promote.tolerance": lambda v: None if v >= 0 else "must be >= 0",
    # The upper bound depends on the encoder (Lite0: 17 stages, Lite2: 22); it says so.
    "train.vision.finetune_blocks": lambda v: None if v >= 0 else "must be >= 0",
    "train.text.finetune_layers": lambda v: None if 0 <= v <= 48 else "must be in 0..48",
}
# Ranges shared by every head section (train.<kind>.<key>).
_HEAD_CHECKS: dict[str, _Validator] = {
    "hidden_dim": lambda v: None if v >= 0 else "must be >= 0 (0 = linear)",
    "dropout": lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
    "lr": lambda v: None if v > 0 else "must be > 0",
    "weight_decay": lambda v: None if v >= 0 else "must be >= 0",
    "epochs": lambda v: None if v >= 1 else "must be >= 1",
    "patience": lambda v: None if v >= 1 else "must be >= 1",
    "batch_size": lambda v: None if v >= 1 else "must be >= 1",
    "label_smoothing": lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
    "modality_dropout": lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
    "aux_weight": lambda v: None if v >= 0 else "must be >= 0",
    "finetune_lr": lambda v: None if v > 0 else "must be > 0",
    "finetune_epochs": lambda v: None if v >= 1 else "must be >= 1",
    "finetune_patience": lambda v: None if v >= 1 else "must be >= 1",
    "finetune_batch_size": lambda v: None if v >= 2 else "must be >= 2",
}
_CHECKS.update(
    {
        f"train.{kind}.{name}": check
        for kind in ("vision", "text", "combined")
        for name, check in _HEAD_CHECKS.items()
    }
)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and build nested dataclasses."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not one of {allowed}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches no type")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        (item_tp, _ellipsis) = get_args(tp)
        return tuple(_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in this module


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "params.yaml"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        keys = ", ".join(f"{prefix}.{k}" if prefix else str(k) for k in unknown)
        raise ConfigError(f"unknown key(s): {keys} (expected: {', '.join(names)})")
    values = {}
    for name in names:
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            raise ConfigError(f"missing key: {key}")
        value = _convert(data[name], hints[name], key)
        check = _CHECKS.get(key)
        if check is not None and (problem := check(value)) is not None:
            raise ConfigError(f"{key}: {value!r} {problem}")
        values[name] = value
    return cls(**values)


def params_from_dict(data: Any) -> Params:
    """Validate an already-parsed params mapping (used by tests and ``load_params``)."""
    params = _build(Params, data, "")
    split = params.split
    if split.val_fraction + split.test_fraction >= 1:
        raise ConfigError("split.val_fraction + split.test_fraction must be < 1")
    return params


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
