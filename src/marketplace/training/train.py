"""Train one of the three classifiers on cached embeddings and evaluate it.

``train_classifier`` builds the kind's inputs, fits its head with early stopping on the
validation split (or, given a ``WarmStart`` with the same inputs, continues from its
weights for at most ``warm_epochs``), optionally fine-tunes the top of the encoder with it
(vision and text, off by default: ``training.finetune``), scores val and test, and returns a
``ClassifierPackage`` ready to save and log, with the history and test predictions for
the reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from marketplace.core.config import HeadParams, TrainParams
from marketplace.data.labels import LabelMap
from marketplace.features.embedding import EmbeddingSet
from marketplace.features.tfidf import HashedTfidf
from marketplace.models.classifier import ClassifierPackage
from marketplace.models.heads import CombinedClassifier, MLPHead, TextClassifier
from marketplace.models.price import PriceScaler
from marketplace.models.query import kind_slug
from marketplace.training.calibration import fit_temperature
from marketplace.training.finetune import Finetuned, finetune_text, finetune_vision
from marketplace.training.inputs import (
    SplitData,
    TextFeatures,
    combined_data,
    concat_views,
    products_table,
    query_views,
    text_data,
    vision_data,
)
from marketplace.training.loop import FitConfig, FitFunction, fit, predict_logits
from marketplace.training.metrics import classification_metrics, per_class_report


@dataclass
class TrainedModel:
    """A fitted classifier with everything its run logs."""

    package: ClassifierPackage
    history: list[dict[str, float]]
    best_epoch: int
    metrics: dict[str, float]
    test_probabilities: np.ndarray
    test_labels: np.ndarray
    test_ids: list[str]
    report: dict[str, Any]
    # Calibrated val probabilities per query kind: the drift monitor's confidence reference
    val_by_kind: dict[str, np.ndarray] = field(default_factory=dict)
    # One row per (test product, query kind): whether it was classified right. Logged with
    # the version so that the promotion gate can score two versions on the test products
    # they share (``marketplace.mlops.promotion``).
    test_outcomes: pd.DataFrame | None = None
    # "cold", "cold: <why the warm start did not fit>" or "from <source>"
    warm_start: str = "cold"


@dataclass(frozen=True)
class WarmStart:
    """A trained package whose head weights a new training run may start from."""

    package: ClassifierPackage
    source: str  # for people and the run's tags, e.g. "marketplace-combined version 7"


def _canonical(value: Any) -> str:
    """One spelling for equal configs, whether they went through JSON (lists) or not."""
    return json.dumps(value, sort_keys=True, default=str)


def warm_start_mismatch(
    warm: ClassifierPackage,
    kind: str,
    head: torch.nn.Module,
    arguments: dict[str, Any],
    label_map: LabelMap,
    image_spec: dict[str, Any] | None,
    text_spec: dict[str, Any] | None,
    tfidf: HashedTfidf | None,
) -> str | None:
    """Why ``warm``'s weights cannot start the head about to train; ``None`` when they can.

    The weights only mean the same thing over the same inputs: the same categories in the
    same order, vectors from the same frozen encoders (a fine-tuned encoder made other
    vectors) and the same hashed TF-IDF buckets; the same architecture and sizes.
    """
    checks = [
        (warm.kind == kind, f"it is a {warm.kind} model"),
        (warm.architecture == type(head).__name__, f"its architecture is {warm.architecture}"),
        (_canonical(warm.arguments) == _canonical(arguments), "its sizes or settings differ"),
        (
            tuple(warm.label_map.categories) == tuple(label_map.categories),
            "its categories differ",
        ),
        (not warm.encoder_tensors, "its encoder was fine-tuned"),
        (_canonical(warm.image_spec) == _canonical(image_spec), "its image encoder differs"),
        (_canonical(warm.text_spec) == _canonical(text_spec), "its text encoder differs"),
        (
            _canonical(None if warm.tfidf is None else asdict(warm.tfidf.config))
            == _canonical(None if tfidf is None else asdict(tfidf.config)),
            "its TF-IDF buckets differ",
        ),
    ]
    return next((why for ok, why in checks if not ok), None)


def evaluate_by_kind(
    model_kind: str,
    model: torch.nn.Module,
    parts: dict[str, SplitData],
    n_classes: int,
    metrics: dict[str, float],
    inputs_of: dict[str, list[Any]] | None = None,
    by_kind: dict[str, dict[str, np.ndarray]] | None = None,
    outcomes: dict[str, pd.DataFrame] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Fit a temperature per query kind on val; score every kind of every split.

    Adds ``<split>_<kind>_<metric>`` (``models.query.kind_slug``) and, for the listings
    as they come (a photo and text where the product has a photo, text alone otherwise),
    ``<split>_<metric>`` to ``metrics``. Returns the temperatures and, per split, the
    calibrated probabilities of the listings as they come (row-aligned with the split).
    ``inputs_of`` replaces a split's inputs (a fine-tuned encoder reads pixels or tokens).
    ``by_kind``, when given, receives each split's calibrated probabilities per query kind.
    ``outcomes`` receives, per split, one row per (product, query kind: ``all`` for the
    listings as they come) with ``correct`` (``outcome_rows``).
    """
    calibration: dict[str, float] = {}
    as_they_come: dict[str, np.ndarray] = {}
    for name in ("val", "test"):
        part = parts[name]
        if inputs_of is not None:
            part = SplitData(inputs_of[name], part.labels, part.ids)
        views = query_views(model_kind, part)
        calibrated = {}
        rows = []
        for query, view in views.items():
            logits = (
                predict_logits(model, view.inputs, 64 if inputs_of else 1024)
                if len(view.labels)
                else torch.zeros(0, n_classes)
            )
            if name == "val":
                calibration[query] = round(fit_temperature(logits, view.labels), 6)
            probs = (logits / calibration[query]).softmax(dim=1).numpy()
            calibrated[query] = probs
            rows.append(outcome_rows(view.ids, query, probs, view.labels.numpy()))
            metrics.update(
                classification_metrics(probs, view.labels.numpy(), f"{name}_{kind_slug(query)}_")
            )
        if model_kind == "combined":
            mixed = calibrated["text"].copy()
            photo = (part.inputs[2] > 0).numpy()
            mixed[photo] = calibrated["image+text"]
        else:
            mixed = next(iter(calibrated.values()))
        as_they_come[name] = mixed
        if by_kind is not None:
            by_kind[name] = calibrated
        metrics.update(classification_metrics(mixed, part.labels.numpy(), f"{name}_"))
        if outcomes is not None:
            rows.insert(0, outcome_rows(part.ids, "all", mixed, part.labels.numpy()))
            outcomes[name] = pd.concat(rows, ignore_index=True)
    return calibration, as_they_come


def outcome_rows(
    ids: list[str], kind: str, probabilities: np.ndarray, labels: np.ndarray
) -> pd.DataFrame:
    """Per product of a split: the query kind, and whether the top class is the label."""
    correct = probabilities.argmax(axis=1) == labels if len(ids) else np.zeros(0, dtype=bool)
    return pd.DataFrame({"product_id": list(ids), "kind": kind, "correct": correct.astype(int)})


def _fit_config(head: HeadParams, seed: int) -> FitConfig:
    return FitConfig(
        lr=head.lr,
        weight_decay=head.weight_decay,
        epochs=head.epochs,
        patience=head.patience,
        batch_size=head.batch_size,
        seed=seed,
        label_smoothing=head.label_smoothing,
    )


def train_classifier(
    kind: str,
    listings: pd.DataFrame,
    splits: dict[str, list[str]],
    label_map: LabelMap,
    params: TrainParams,
    *,
    images: EmbeddingSet | None = None,
    texts: EmbeddingSet | None = None,
    text_features: TextFeatures | None = None,
    images_dir: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    fit_function: FitFunction = fit,
    warm_start: WarmStart | None = None,
) -> TrainedModel:
    """Fit the ``vision``, ``text`` or ``combined`` classifier; see the module docstring.

    ``text_features`` (the ``tfidf`` stage's output, or ``features.build_text_features``)
    is needed by the text and combined models, ``images`` by vision and combined, ``texts``
    by text and combined. ``images_dir`` (the cleaned canvases) is read only to fine-tune
    the vision encoder. ``fit_function`` runs the fine-tuning (``training.loop.fit`` here,
    or ``training.distributed.fit_function(compute)``: data parallel on Ray); heads on
    cached vectors always train here (seconds). ``warm_start`` is used when the kind's
    ``warm_epochs`` > 0 and ``warm_start_mismatch`` finds nothing against it; the epoch-0
    weights (its own) are kept unless an epoch beats them on val.
    """
    torch.manual_seed(params.seed)
    n_classes = len(label_map)
    products = products_table(listings)
    tfidf: HashedTfidf | None = None
    prices: PriceScaler | None = None
    head_params: HeadParams
    data: dict[str, SplitData]
    if kind == "vision":
        assert images is not None
        head_params = params.vision
        data = vision_data(listings, images, splits)
        arguments: dict[str, Any] = {
            "in_dim": images.dim,
            "num_classes": n_classes,
            "hidden_dim": head_params.hidden_dim,
            "dropout": head_params.dropout,
        }
        head: torch.nn.Module = MLPHead(**arguments)
    elif kind in ("text", "combined"):
        if texts is None or text_features is None:
            raise ValueError(f"the {kind} model needs texts and text_features")
        text_features.check_split(splits)
        tfidf, rows = text_features.tfidf, text_features.rows
        if kind == "text":
            head_params = params.text
            data = text_data(products, texts, rows, splits)
            arguments = {
                "tfidf_features": tfidf.config.n_features,
                "text_dim": texts.dim,
                "num_classes": n_classes,
                "hidden_dim": head_params.hidden_dim,
                "dropout": head_params.dropout,
            }
            head = TextClassifier(**arguments)
        else:
            assert images is not None
            head_params = params.combined
            prices = PriceScaler.fit(list(products.loc[splits["train"], "price"]))
            data = combined_data(products, images, texts, rows, prices, splits)
            arguments = {
                "tfidf_features": tfidf.config.n_features,
                "image_dim": images.dim,
                "text_dim": texts.dim,
                "extra_dim": 2,
                "num_classes": n_classes,
                "hidden_dim": head_params.hidden_dim,
                "dropout": head_params.dropout,
                "modality_dropout": params.combined.modality_dropout,
                "aux_weight": params.combined.aux_weight,
            }
            head = CombinedClassifier(**arguments)
    else:
        raise ValueError(f"unknown classifier kind {kind!r}")

    image_spec = dict(images.spec) if images is not None and kind != "text" else None
    text_spec = dict(texts.spec) if texts is not None and kind != "vision" else None
    config = _fit_config(head_params, params.seed)
    started_from = "cold"
    if warm_start is not None and head_params.warm_epochs > 0:
        why = warm_start_mismatch(
            warm_start.package, kind, head, arguments, label_map, image_spec, text_spec, tfidf
        )
        if why is None:
            head.load_state_dict(warm_start.package.head.state_dict())
            epochs = head_params.warm_epochs
            config = replace(config, epochs=epochs, patience=epochs, evaluate_start=True)
            started_from = f"from {warm_start.source}"
        else:
            started_from = f"cold: {warm_start.source} does not fit ({why})"

    train, val, test = data["train"], data["val"], data["test"]
    # Early stopping sees every query kind the model answers (for the combined model, its
    # val products as photo-only, text-only and photo+text queries), not the mix alone.
    val_fit = concat_views(list(query_views(kind, val).values()))
    result = fit(
        head,
        (train.inputs, train.labels),
        (val_fit.inputs, val_fit.labels),
        config,
        on_epoch=on_epoch,
    )
    metrics: dict[str, float] = {
        "best_epoch": float(result.best_epoch),
        "warm_started": float(started_from.startswith("from")),
    }
    history = list(result.history)
    tuned: Finetuned | None = None
    if kind == "vision" and params.vision.finetune_blocks > 0:
        assert images is not None
        if images_dir is None:
            raise ValueError("fine-tuning the image encoder needs images_dir (the canvases)")
        tuned = finetune_vision(
            head,
            data,
            images_dir,
            images.spec,
            params.vision,
            params.seed,
            epoch_offset=len(history),
            on_epoch=on_epoch,
            fit_function=fit_function,
        )
    elif kind == "text" and params.text.finetune_layers > 0:
        assert texts is not None
        tuned = finetune_text(
            head,
            data,
            {name: list(products.loc[part.ids, "text"]) for name, part in data.items()},
            texts.spec,
            params.text,
            params.seed,
            epoch_offset=len(history),
            on_epoch=on_epoch,
            fit_function=fit_function,
        )
    if tuned is not None:
        history += [{**r, "epoch": r["epoch"] + len(history)} for r in tuned.result.history]
        metrics["finetune_best_epoch"] = float(tuned.result.best_epoch)
    model, inputs_of = (head, None) if tuned is None else (tuned.model, tuned.inputs)
    by_kind: dict[str, dict[str, np.ndarray]] = {}
    outcomes: dict[str, pd.DataFrame] = {}
    calibration, probabilities = evaluate_by_kind(
        kind,
        model,
        {"val": val, "test": test},
        n_classes,
        metrics,
        inputs_of,
        by_kind=by_kind,
        outcomes=outcomes,
    )
    if tuned is not None:
        (image_spec if kind == "vision" else text_spec)["finetuned"] = tuned.spec()  # type: ignore[index]
    package = ClassifierPackage(
        kind=kind,
        label_map=label_map,
        architecture=type(head).__name__,
        arguments=arguments,
        head=head.eval(),
        image_spec=image_spec,
        text_spec=text_spec,
        tfidf=tfidf,
        prices=prices,
        info={"metrics": metrics, "warm_start": started_from},
        encoder_tensors=tuned.encoder_tensors if tuned is not None else {},
        calibration=calibration,
    )
    return TrainedModel(
        package=package,
        history=history,
        best_epoch=result.best_epoch,
        metrics=metrics,
        test_probabilities=probabilities["test"],
        test_labels=test.labels.numpy(),
        test_ids=test.ids,
        report=per_class_report(probabilities["test"], test.labels.numpy(), label_map.categories),
        val_by_kind=by_kind["val"],
        test_outcomes=outcomes["test"],
        warm_start=started_from,
    )
