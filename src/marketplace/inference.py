"""The one inference entry point: a registered model and its index, loaded together.

``Marketplace.from_registry("marketplace-combined", "production")`` resolves the alias to
a version, downloads that version's artifacts (the classifier package and the FAISS index
logged beside it), checks the index was built by exactly this package, and loads both.
The API (``serving/``) and the command line (``python -m marketplace.inference``) call
the same ``predict`` / ``embed`` / ``similar`` methods; no training code runs here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from marketplace.core.errors import InputError
from marketplace.mlops.pyfunc import INDEX_ARTIFACT, PACKAGE_ARTIFACT
from marketplace.models.classifier import Encoded, ListingClassifier
from marketplace.models.query import query_kind
from marketplace.search.index import ProductIndex, branch_vectors, package_sha256, query_vector
from marketplace.search.thumbnails import ThumbnailSet


class ModelNotFoundError(LookupError):
    """The alias or version does not exist in the registry."""


@dataclass(frozen=True)
class ModelInfo:
    """Which model is loaded, for ``GET /model`` and for every response."""

    name: str
    version: str
    run_id: str | None
    alias: str | None
    metrics: dict[str, float]
    index_size: int
    index_factory: str
    index_model_version: str
    loaded_at: float
    load_seconds: float
    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None  # the version's model card (Markdown), from the registry


@dataclass(frozen=True)
class Listing:
    """One listing to classify: a photo (raw bytes) and/or a text, and its price if known."""

    image: bytes | None = None
    text: str | None = None
    price: float | None = None


@dataclass(frozen=True)
class Prediction:
    """One listing's ranking, and what the frozen encoders made of it (for the prediction
    log's drift vectors, and for a second version with the same encoders to reuse)."""

    ranking: list[tuple[str, float]]
    encoded: Encoded  # this listing alone (one row)

    @property
    def image_vector(self) -> np.ndarray | None:
        return self.encoded.image_vector(0)

    @property
    def text_vector(self) -> np.ndarray | None:
        return self.encoded.text_vector(0)


@dataclass(frozen=True)
class SimilarAnswer:
    """Similar products for a photo and/or text, the query kind, and the frozen encoders'
    vectors of the query (before projection into the index space)."""

    results: list[dict[str, Any]]
    kind: str
    image_vector: np.ndarray | None
    text_vector: np.ndarray | None


@dataclass(frozen=True)
class Filters:
    """Optional restrictions on similar products."""

    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None


def package_dir(model_dir: Path) -> Path:
    """Where the pyfunc model keeps the classifier package (read from its ``MLmodel``)."""
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    artifacts = mlmodel["flavors"]["python_function"].get("artifacts", {})
    if PACKAGE_ARTIFACT not in artifacts:
        raise ValueError(f"{model_dir} is not a marketplace model (no {PACKAGE_ARTIFACT!r})")
    return model_dir / artifacts[PACKAGE_ARTIFACT]["path"]


def _metrics(tags: dict[str, str]) -> dict[str, float]:
    out = {}
    for key, value in tags.items():
        if key.startswith(("val_", "test_")):
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


class Marketplace:
    """A classifier and its product index: predict a category, embed, find similar."""

    def __init__(
        self,
        classifier: ListingClassifier,
        index: ProductIndex,
        info: ModelInfo,
        thumbnails: ThumbnailSet | None = None,
    ):
        self.classifier = classifier
        self.index = index
        self.info = info
        # Listing photos stored with the index (marketplace.search.thumbnails); None: an
        # older index.
        self.thumbnails = thumbnails
        # The catalogue log's live listings over the index (marketplace.search.live
        # .LiveCatalogue, attached by the API at load); None: the built catalogue only.
        self.live: Any = None

    @classmethod
    def from_model_dir(
        cls,
        model_dir: Path,
        *,
        name: str,
        version: str,
        run_id: str | None = None,
        alias: str | None = None,
        tags: dict[str, str] | None = None,
        started: float | None = None,
        description: str | None = None,
    ) -> Marketplace:
        """Load a downloaded model version; refuses an index another model built."""
        started = time.perf_counter() if started is None else started
        folder = package_dir(model_dir)
        index_dir = model_dir / INDEX_ARTIFACT
        if not index_dir.is_dir():
            raise ValueError(f"{name} version {version} has no index; run the index stage")
        index = ProductIndex.load(
            index_dir, model_version=version, package_sha=package_sha256(folder)
        )
        thumbnails = ThumbnailSet.load(index_dir)  # read into memory: the folder is temporary
        classifier = ListingClassifier.load(folder)
        # One text prediction before serving: it loads what the first request would
        # otherwise wait for (the TF-IDF hashers, torch's kernels).
        classifier.predict_proba(texts=["warm-up listing"], prices=[None])
        tags = dict(tags or {})
        info = ModelInfo(
            name=name,
            version=str(version),
            run_id=run_id,
            alias=alias,
            metrics=_metrics(tags),
            index_size=len(index),
            index_factory=index.meta.factory,
            index_model_version=index.meta.model_version,
            loaded_at=time.time(),
            load_seconds=time.perf_counter() - started,
            tags=tags,
            description=description,
        )
        return cls(classifier, index, info, thumbnails)

    @classmethod
    def from_registry(
        cls, name: str, alias: str = "production", *, version: str | None = None
    ) -> Marketplace:
        """Resolve ``alias`` (or take ``version``), download it and load it.

        Uses the tracking/registry URI MLflow is configured with (``MLFLOW_TRACKING_URI``).
        Files are read into memory and the download folder is removed afterwards.
        """
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        started = time.perf_counter()
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tty noise
        client = MlflowClient()
        try:
            mv = (
                client.get_model_version(name, version)
                if version is not None
                else client.get_model_version_by_alias(name, alias)
            )
        except MlflowException as exc:
            what = f"version {version}" if version is not None else f"alias {alias!r}"
            raise ModelNotFoundError(f"{name} {what} not found: {exc.message}") from None
        with tempfile.TemporaryDirectory(prefix="marketplace-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                f"models:/{name}/{mv.version}", dst_path=tmp
            )
            return cls.from_model_dir(
                Path(local),
                name=name,
                version=str(mv.version),
                run_id=mv.run_id,
                alias=None if version is not None else alias,
                tags=mv.tags,
                started=started,
                description=mv.description or None,
            )

    @property
    def categories(self) -> tuple[str, ...]:
        return self.classifier.categories

    def predict(
        self, *, image: bytes | None = None, text: str | None = None, price: float | None = None
    ) -> list[tuple[str, float]]:
        """Every category with its probability, most likely first."""
        return self.predict_many([Listing(image, text, price)])[0]

    def predict_many(self, listings: Sequence[Listing]) -> list[list[tuple[str, float]]]:
        """``predict`` for several listings in one forward pass (the API batches requests)."""
        return [p.ranking for p in self.predict_encoded_many(listings)]

    def predict_encoded_many(self, listings: Sequence[Listing]) -> list[Prediction]:
        """``predict_many``, keeping each listing's encoder output beside its ranking."""
        encoded = self.classifier.encode(
            images=[x.image for x in listings], texts=[x.text for x in listings]
        )
        probabilities = self.classifier.predict_encoded(encoded, [x.price for x in listings])
        return [
            Prediction(self._ranking(row), encoded.rows([i])) for i, row in enumerate(probabilities)
        ]

    def rescore(self, listings: Sequence[Listing], encoded: Sequence[Encoded]) -> list[Any]:
        """Rankings of ``listings`` from another version's encoder output (one ``Encoded``
        row each), without running an encoder; only when
        ``self.classifier.reuses_encoders_of`` that version's classifier."""
        merged = Encoded(
            [e.texts[0] for e in encoded],
            _stack([e.image_vectors for e in encoded]),
            _stack([e.has_image for e in encoded]),
            _stack([e.text_vectors for e in encoded]),
        )
        probabilities = self.classifier.predict_encoded(merged, [x.price for x in listings])
        return [self._ranking(row) for row in probabilities]

    def _ranking(self, row: np.ndarray) -> list[tuple[str, float]]:
        return [(self.categories[i], float(row[i])) for i in np.argsort(-row)]

    def embed(
        self, *, image: bytes | None = None, text: str | None = None
    ) -> tuple[np.ndarray, str]:
        """The query vector in the index space and which kind of query it is."""
        vector, kind, _, _ = self._embed(image=image, text=text)
        return vector, kind

    def _embed(
        self, *, image: bytes | None, text: str | None
    ) -> tuple[np.ndarray, str, np.ndarray | None, np.ndarray | None]:
        """``embed``, and the encoders' own photo and text vectors (``None`` if absent)."""
        if image is None and not text:
            raise InputError("send a photo, a text, or both")
        text_vec = image_vec = None
        if text:
            text_vec = self.classifier.text_embeddings([text]).numpy()
        if image is not None:
            image_vec = self.classifier.image_embeddings([image])[0].numpy()
        t, i = branch_vectors(self.classifier.package, text_vec, image_vec)
        vector = query_vector(
            None if t is None else t[0],
            None if i is None else i[0],
            self.index.half,
            self.index.meta.text_weight,
        )
        return (
            vector,
            query_kind(t is not None, i is not None),
            None if image_vec is None else image_vec[0],
            None if text_vec is None else text_vec[0],
        )

    def similar(
        self,
        *,
        image: bytes | None = None,
        text: str | None = None,
        k: int = 10,
        filters: Filters = Filters(),
    ) -> tuple[list[dict[str, Any]], str]:
        """Products most like a photo and/or text; returns records with scores, and the kind."""
        answer = self.similar_answer(image=image, text=text, k=k, filters=filters)
        return answer.results, answer.kind

    def similar_answer(
        self,
        *,
        image: bytes | None = None,
        text: str | None = None,
        k: int = 10,
        filters: Filters = Filters(),
    ) -> SimilarAnswer:
        """``similar``, with the encoders' vectors of the query (for the prediction log)."""
        vector, kind, image_vec, text_vec = self._embed(image=image, text=text)
        if self.live is not None:  # the built index with the catalogue's live changes
            results = self.live.search(vector, k, filters, require_image=kind == "image")
            return SimilarAnswer(results, kind, image_vec, text_vec)
        mask = self.index.allowed(
            category=filters.category,
            min_price=filters.min_price,
            max_price=filters.max_price,
            require_image=kind == "image",
        )
        results = self._records(self.index.search(vector, k, mask=mask))
        return SimilarAnswer(results, kind, image_vec, text_vec)

    def similar_to_product(
        self, product_id: str, *, k: int = 10, filters: Filters = Filters()
    ) -> list[dict[str, Any]]:
        """More like this listing (itself excluded); ``KeyError`` for an unknown id."""
        if self.live is not None:
            return self.live.similar_to_product(product_id, k, filters)
        position = self.index.position(product_id)
        if position is None:
            raise KeyError(product_id)
        mask = self.index.allowed(
            category=filters.category, min_price=filters.min_price, max_price=filters.max_price
        )
        hits = self.index.neighbours(position, k) if mask is None else None
        if hits is None:  # filtered, or deeper than the precomputed lists
            query = self.index.product_query(position)
            hits = self.index.search(query, k, mask=mask, exclude=position)
        return self._records(hits)

    def _records(self, hits: list[tuple[int, float]]) -> list[dict[str, Any]]:
        return [{**self.index.record(p), "score": round(s, 6)} for p, s in hits]


def _stack(parts: list[Any]) -> Any:
    """Rows of a branch stacked again (``None`` when the branch is absent)."""
    import torch

    return None if any(p is None for p in parts) else torch.cat(parts)


def main(argv: list[str] | None = None) -> int:
    """``python -m marketplace.inference``: query the registered model from the shell."""
    from marketplace.mlops.tracking import setup_tracking

    parser = argparse.ArgumentParser(description="Query a registered marketplace model.")
    parser.add_argument("--model", default="marketplace-combined")
    parser.add_argument("--alias", default="production")
    parser.add_argument("--version", help="a version number instead of the alias")
    parser.add_argument("--image", type=Path, help="a JPEG/PNG/WebP photo")
    parser.add_argument("--text", help="title and/or description")
    parser.add_argument("--price", type=float)
    parser.add_argument("--product", help="find products similar to this product id")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args(argv)
    if args.image is None and not args.text and not args.product:
        parser.error("give --image, --text, or --product")
    setup_tracking()
    try:
        market = Marketplace.from_registry(args.model, args.alias, version=args.version)
    except (ModelNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"model": f"{market.info.name}/{market.info.version}"}
    if args.product:
        try:
            out["similar"] = market.similar_to_product(args.product, k=args.k)
        except KeyError:
            print(f"error: unknown product id {args.product}", file=sys.stderr)
            return 2
    else:
        image = args.image.read_bytes() if args.image else None
        ranked = market.predict(image=image, text=args.text, price=args.price)
        out["category"], out["confidence"] = ranked[0]
        out["top_3"] = [{"category": c, "probability": round(p, 4)} for c, p in ranked[:3]]
        out["similar"], out["query"] = market.similar(image=image, text=args.text, k=args.k)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
