"""The training reference a registered version carries for the drift monitor.

The monitor compares what serving logged with what the model was trained and validated
on. Reading the training outputs back at monitor time would tie it to one checkout's
``outputs/`` (and its DVC state); instead, every training run logs a small reference
next to its model (``monitor_reference/`` in the run's artifacts, about 2-4 MB), so the
monitor needs only the registry and the prediction log:

* the train split's label counts (what the predicted-category mix is compared with);
* the share of photo / text / both among the train listings as they come;
* a seeded sample of train photos' and texts' frozen-encoder vectors (the same vectors
  serving logs), as float16, for the embedding-drift domain classifier;
* the train listings' text lengths (``listing_text``: what a client sends as ``text``);
* per query kind, the calibrated top-1 probabilities on the val split (what confidence
  looks like when nothing has drifted) and the val predicted-category counts.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marketplace.features.preprocessing import listing_text

ARTIFACT = "monitor_reference"  # folder in the training run's artifacts
_ARRAYS = "reference.npz"
_META = "reference.json"


@dataclass
class Reference:
    """What the model was trained and validated on, summarised (see the module docstring)."""

    model_kind: str  # vision | text | combined
    categories: list[str]
    label_counts: np.ndarray  # int [n_categories], train split
    kind_share: dict[str, float]  # query kind -> share of train listings as they come
    text_chars: np.ndarray  # int [n], train listings' text lengths
    image_vectors: np.ndarray  # float16 [n, d] (0 rows for the text model)
    text_vectors: np.ndarray  # float16 [n, d] (0 rows for the vision model)
    confidences: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> val top-1 p
    val_predicted: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> counts

    def label_share(self) -> np.ndarray:
        total = max(int(self.label_counts.sum()), 1)
        return self.label_counts / total

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            "label_counts": self.label_counts,
            "text_chars": self.text_chars,
            "image_vectors": self.image_vectors,
            "text_vectors": self.text_vectors,
        }
        for kind, values in self.confidences.items():
            arrays[f"confidence:{kind}"] = values
        for kind, counts in self.val_predicted.items():
            arrays[f"val_predicted:{kind}"] = counts
        np.savez_compressed(folder / _ARRAYS, **arrays)
        meta = {
            "model_kind": self.model_kind,
            "categories": self.categories,
            "kind_share": self.kind_share,
            "sizes": {k: list(np.shape(v)) for k, v in arrays.items()},
        }
        (folder / _META).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> Reference:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        with np.load(folder / _ARRAYS) as data:
            arrays = {k: data[k] for k in data.files}
        return cls(
            model_kind=meta["model_kind"],
            categories=list(meta["categories"]),
            label_counts=arrays["label_counts"],
            kind_share={k: float(v) for k, v in meta["kind_share"].items()},
            text_chars=arrays["text_chars"],
            image_vectors=arrays["image_vectors"],
            text_vectors=arrays["text_vectors"],
            confidences={
                k.partition(":")[2]: v for k, v in arrays.items() if k.startswith("confidence:")
            },
            val_predicted={
                k.partition(":")[2]: v for k, v in arrays.items() if k.startswith("val_predicted:")
            },
        )


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size, replace=False)) if n > size else np.arange(n)


def build_reference(
    model_kind: str,
    listings: pd.DataFrame,
    train_ids: list[str],
    categories: list[str],
    *,
    images: Any | None,
    texts: Any | None,
    val_by_kind: dict[str, np.ndarray],
    size: int,
    seed: int = 0,
) -> Reference:
    """The reference of a model trained on ``train_ids``.

    ``listings`` is the cleaned table (one row per photo; ``label``, ``title``,
    ``description``, ``image_id``); ``images``/``texts`` are the cached embedding sets
    (``features.embedding.EmbeddingSet``) the model was trained on, or ``None`` where the
    kind does not read them; ``val_by_kind`` is ``TrainedModel.val_by_kind``.
    """
    rng = np.random.default_rng(seed)
    train = listings[listings["product_id"].isin(set(train_ids))]
    products = train.drop_duplicates("product_id")
    labels = products["label"].to_numpy(int)
    label_counts = np.bincount(labels, minlength=len(categories)).astype(np.int64)
    chars = np.array(
        [
            len(listing_text(t, d))
            for t, d in zip(products["title"], products["description"], strict=True)
        ],
        dtype=np.int32,
    )
    image_vectors = np.zeros((0, 0), np.float16)
    with_photo: set[str] = set()
    if images is not None:
        photo_ids = [str(i) for i in train["image_id"].dropna()]
        vectors, found = images.lookup(photo_ids)
        owners = train.dropna(subset=["image_id"])["product_id"].to_numpy(str)[found]
        with_photo = set(owners.tolist())
        vectors = vectors[found]
        image_vectors = vectors[_sample(len(vectors), size, rng)].astype(np.float16)
    text_vectors = np.zeros((0, 0), np.float16)
    if texts is not None:
        vectors, found = texts.lookup(list(products["product_id"].astype(str)))
        vectors = vectors[found]
        text_vectors = vectors[_sample(len(vectors), size, rng)].astype(np.float16)
    if model_kind == "vision":
        kind_share = {"image": 1.0}
    elif model_kind == "text":
        kind_share = {"text": 1.0}
    else:  # the listings as they come: photo and text where there is a photo, else text
        photo_share = len(with_photo) / max(len(products), 1)
        kind_share = {"image+text": photo_share, "text": 1.0 - photo_share, "image": 0.0}
    return Reference(
        model_kind=model_kind,
        categories=list(categories),
        label_counts=label_counts,
        kind_share=kind_share,
        text_chars=chars[_sample(len(chars), size * 4, rng)],
        image_vectors=image_vectors,
        text_vectors=text_vectors,
        confidences={k: p.max(axis=1).astype(np.float32) for k, p in val_by_kind.items()},
        val_predicted={
            k: np.bincount(p.argmax(axis=1), minlength=len(categories)).astype(np.int64)
            for k, p in val_by_kind.items()
        },
    )


def log_reference(reference: Reference) -> None:
    """Log the reference into the active MLflow run (``monitor_reference/``)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="marketplace-reference-") as tmp:
        reference.save(Path(tmp))
        mlflow.log_artifacts(tmp, ARTIFACT)


class NoReferenceError(LookupError):
    """The version's training run logged no monitor reference (trained before it existed)."""


def load_reference(run_id: str) -> Reference:
    """Download the reference of the training run ``run_id``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="marketplace-reference-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=ARTIFACT, dst_path=tmp
            )
            return Reference.load(Path(local))
        except (MlflowException, OSError) as exc:
            raise NoReferenceError(
                f"run {run_id} has no {ARTIFACT}/ artifact ({type(exc).__name__}); retrain "
                "the model (dvc repro) to log one with its version"
            ) from None
