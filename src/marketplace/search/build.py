"""Building and evaluating the similar-products index (the ``index`` stage's library).

The index itself, its query spaces and its search live in ``marketplace.search.index``,
which the API loads; this module holds what only the pipeline runs: building the FAISS
index over the catalogue from cached embeddings, precomputing every product's "more like
this" list (here or on Ray), choosing the photo-and-text weight on validation products,
writing the index folder and reporting precision@k per query kind. It may use training
code (``training.inputs``); ``marketplace.search.index`` may not.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from marketplace.compute.batches import Runner, run_batches
from marketplace.core.errors import StageError
from marketplace.core.io import write_npz
from marketplace.models.classifier import ClassifierPackage
from marketplace.models.query import QUERY_KINDS
from marketplace.search.index import (
    INDEX_FILE,
    INDEX_FORMAT,
    META_FILE,
    NEIGHBOURS_FILE,
    PRODUCTS_FILE,
    IndexMeta,
    ProductIndex,
    branch_vectors,
    query_vector,
)
from marketplace.training.inputs import product_image_vectors

TRAIN_SAMPLE = 65_536  # vectors k-means / PQ train on (faiss itself uses <= 256 a centroid)
ADD_BATCH = 65_536  # vectors added at a time: bounded memory for the encoding of each batch


def catalogue_vectors(text: np.ndarray, image: np.ndarray, has_image: np.ndarray) -> np.ndarray:
    """Stored vectors ``[t, i]``, the image half zeroed for products without a photo."""
    return np.concatenate([text, image * has_image[:, None].astype(np.float32)], axis=1)


def save_index(index: ProductIndex, folder: Path) -> None:
    """Write an index folder that ``ProductIndex.load`` reads (see its module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index.index, str(folder / INDEX_FILE))
    index.products.to_parquet(folder / PRODUCTS_FILE, index=False)
    (folder / META_FILE).write_text(json.dumps(asdict(index.meta), indent=2) + "\n")
    if index.neighbour_lists is not None:
        positions, scores = index.neighbour_lists
        write_npz(folder / NEIGHBOURS_FILE, {"positions": positions, "scores": scores})


def with_text_weight(index: ProductIndex, text_weight: float) -> ProductIndex:
    """The same index answering photo-and-text queries with another text weight."""
    return index.with_meta(replace(index.meta, text_weight=float(text_weight), neighbours=0))


def precompute_neighbours(
    index: ProductIndex, k: int, runner: Runner | None = None
) -> ProductIndex:
    """The index with every product's top ``k`` "more like this" list (itself excluded).

    Batched searches over all products (FAISS uses a matrix product for a batch), so
    the API's most frequent query becomes an array read; in shards on Ray with a
    ``runner`` (``marketplace.compute.ray``), each worker holding a copy of the index.
    """
    k = min(k, len(index) - 1)
    make = functools.partial(_neighbour_search, index, k)
    found = run_batches(make, range(len(index)), runner, progress=False)
    return index.with_meta(replace(index.meta, neighbours=k), (found["positions"], found["scores"]))


def _neighbour_search(
    index: ProductIndex, k: int, *, progress: bool = False
) -> Callable[[list[int]], dict[str, np.ndarray]]:
    """``make`` of the neighbour lists (``marketplace.compute.batches``): rows -> top ``k``."""
    return functools.partial(neighbour_rows, index, k)


def neighbour_rows(
    index: ProductIndex, k: int, rows: Sequence[int], batch: int = 2048
) -> dict[str, np.ndarray]:
    """The top ``k`` neighbours of the products at ``rows``: ``positions`` (-1 where
    fewer) and ``scores``, ``[len(rows), k]`` each (the per-batch function of the above)."""
    rows = np.asarray(rows, dtype=np.int64)
    positions = np.full((len(rows), k), -1, dtype=np.int32)
    scores = np.zeros((len(rows), k), dtype=np.float32)
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        queries = index.product_queries(index.index.reconstruct_batch(chunk), chunk)
        found_scores, found = index.index.search(queries, k + 1, params=index.search_params)
        for row, (hit, score) in enumerate(zip(found, found_scores, strict=True), start):
            keep = (hit >= 0) & (hit != rows[row])  # drop the product itself
            hit, score = hit[keep][:k], score[keep][:k]
            positions[row, : len(hit)] = hit
            scores[row, : len(hit)] = score
    return {"positions": positions, "scores": scores}


def build_faiss(
    vectors: np.ndarray, factory: str, *, ef_construction: int = 80, seed: int = 0
) -> faiss.Index:
    """An inner-product index of ``vectors`` from a factory string; one that needs training
    (IVF, PQ, OPQ) is trained on a seeded sample of them, then filled in batches."""
    n, dim = vectors.shape
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if factory.startswith("HNSW"):
        index.hnsw.efConstruction = ef_construction
    if not index.is_trained:
        ivf = faiss.extract_index_ivf(index)
        if ivf.nlist > n:  # k-means needs at least one point per list
            raise ValueError(f"index.factory {factory}: {ivf.nlist} lists for only {n} vectors")
        ivf.cp.seed = seed
        size = max(TRAIN_SAMPLE, 64 * ivf.nlist)
        sample = np.random.default_rng(seed).choice(n, size, replace=False) if n > size else None
        index.train(vectors if sample is None else vectors[np.sort(sample)])
    for start in range(0, n, ADD_BATCH):
        index.add(vectors[start : start + ADD_BATCH])
    return index


def catalogue_records(
    products: pd.DataFrame, photos: Collection[str] | None = None
) -> pd.DataFrame:
    """One record per product, as the API returns it (``image_id``: its first photo).

    ``photos`` are the image ids that have a cleaned photo (the embedded ones): an image row
    whose file was missing or corrupt is no photo. Without them a product whose only image
    rows had no file counted as having a photo, so photo-only queries were made of zero
    vectors (192 of the real export's 991 test "photo" queries) and the search page asked
    for thumbnails that do not exist.
    """
    first_image = [
        next((i for i in ids if photos is None or i in photos), None)
        for ids in products["image_ids"]
    ]
    return pd.DataFrame(
        {
            "product_id": products.index.astype(str),
            "title": products["title"].astype(str).to_numpy(),
            "price": products["price"].astype(float).to_numpy(),
            "category": products["root_category"].astype(str).to_numpy(),
            "location": products["location"].astype(str).to_numpy(),
            "image_id": pd.array(first_image, dtype="string"),
        }
    )


def build_product_index(
    package: ClassifierPackage,
    records: pd.DataFrame,
    text_embeddings: np.ndarray,
    image_embeddings: np.ndarray,
    has_image: np.ndarray,
    *,
    model_name: str,
    model_version: str,
    package_sha: str,
    factory: str,
    nprobe: int,
    ef_search: int,
    ef_construction: int,
) -> ProductIndex:
    """Embed the catalogue into the index space and build the FAISS index over it."""
    text, image = branch_vectors(package, text_embeddings, image_embeddings)
    assert text is not None and image is not None
    vectors = catalogue_vectors(text, image, has_image)
    index = build_faiss(vectors, factory, ef_construction=ef_construction)
    meta = IndexMeta(
        format_version=INDEX_FORMAT,
        model_name=model_name,
        model_version=str(model_version),
        package_sha256=package_sha,
        image_encoder=package.image_spec or {},
        text_encoder=package.text_spec or {},
        factory=factory,
        nprobe=nprobe,
        ef_search=ef_search,
        dim=int(vectors.shape[1]),
        size=int(vectors.shape[0]),
        with_image=int(has_image.sum()),
        space="[text, image] hidden layers of the combined classifier, each L2-normalised",
    )
    return ProductIndex(index, records, meta)


def precision_at_k(
    index: ProductIndex, queries: Sequence[int], k: int, kind: str
) -> tuple[float, int]:
    """Share of the top-k neighbours (the query excluded) in the query's root category.

    ``kind`` picks the query made from each listing: its text, its photo or both (listings
    without a photo are skipped for the last two). Returns ``(precision, n_queries)``.
    """
    half = index.half
    positions = [p for p in queries if kind == "text" or index.has_image(p)]
    if not positions:
        return float("nan"), 0
    stored = np.stack([index.vector(p) for p in positions])
    vectors = [
        query_vector(
            s[:half] if kind != "image" else None,
            s[half:] if kind != "text" else None,
            half,
            index.meta.text_weight,
        )
        for s in stored
    ]
    photo_mask = index.allowed(require_image=True) if kind == "image" else None
    results = index.search_many(np.stack(vectors), k, mask=photo_mask, exclude=positions)
    hits = total = 0
    for position, found in zip(positions, results, strict=True):
        category = index.category(position)
        hits += sum(index.category(p) == category for p, _ in found)
        total += len(found)
    return (hits / total if total else float("nan")), len(positions)


def check_encoder(cached: dict[str, Any], model: dict[str, Any] | None, what: str) -> None:
    """Cached embeddings may stand in for the model's encoder only if they are its output."""
    if model is None or cached != model:
        raise StageError(
            f"the cached {what} embeddings were made by {cached}, but the model's encoder is "
            f"{model}; rerun the embed and train stages together (dvc repro)"
        )


def index_catalogue(
    package: ClassifierPackage,
    products: pd.DataFrame,
    text_embeddings: Any,
    image_embeddings: Any,
    params: Any,
    *,
    model_name: str,
    model_version: str,
    package_sha: str,
    tune_ids: Sequence[str] = (),
    runner: Runner | None = None,
) -> tuple[ProductIndex, dict[str, float]]:
    """The index of a catalogue (``training.inputs.products_table``) from cached embeddings.

    The embed stages ran the very encoders the model names (checked against its specs), so
    the cached vectors are what the registered encoder would produce; only the model's
    branch layers run here. The photo-and-text weight is chosen on ``tune_ids`` (the
    validation products; the first of ``params.text_weights`` without them) and the "more
    like this" lists are precomputed (in shards on Ray with a ``runner``). Returns the
    index and the tuning figures.
    """
    check_encoder(text_embeddings.spec, package.text_spec, "text")
    check_encoder(image_embeddings.spec, package.image_spec, "image")
    text, found = text_embeddings.lookup(list(products.index))
    if not found.all():
        raise ValueError(f"{int((~found).sum())} products have no text embedding")
    image, has_image = product_image_vectors(products, image_embeddings)
    index = build_product_index(
        package,
        catalogue_records(products, set(image_embeddings.ids.tolist())),
        text,
        image,
        has_image,
        model_name=model_name,
        model_version=model_version,
        package_sha=package_sha,
        factory=params.factory,
        nprobe=params.nprobe,
        ef_search=params.ef_search,
        ef_construction=params.ef_construction,
    )
    index, tuning = tune_text_weight(
        index, query_sample(tune_ids, params.eval_queries), params.eval_k, params.text_weights
    )
    if params.neighbours:
        index = precompute_neighbours(index, params.neighbours, runner)
    return index, tuning


def tune_text_weight(
    index: ProductIndex, query_ids: Sequence[str], k: int, weights: Sequence[float]
) -> tuple[ProductIndex, dict[str, float]]:
    """The index with the photo-and-text weight of best precision@k over ``query_ids``.

    Pass validation products, never test ones: the test figures are reported afterwards.
    Ties go to the weight nearest 0.5 (both modalities count equally).
    """
    positions = [p for p in (index.position(i) for i in query_ids) if p is not None]
    if len(weights) == 1 or not positions:
        return with_text_weight(index, weights[0]), {"text_weight": float(weights[0])}
    precision = {
        w: precision_at_k(with_text_weight(index, w), positions, k, "image+text")[0]
        for w in weights
    }
    best = max(weights, key=lambda w: (precision[w], -abs(w - 0.5)))
    figures = {f"val_precision_at_{k}_image_text_w{w:g}": p for w, p in precision.items()}
    return with_text_weight(index, best), {"text_weight": float(best), **figures}


def query_sample(ids: Sequence[str], size: int) -> list[str]:
    """``ids`` when there are at most ``size``; otherwise the ``size`` with the smallest
    BLAKE2 hash of the id: the same sample on every run and machine, whatever the order,
    and a product stays in it as others come and go."""
    if len(ids) <= size:
        return list(ids)
    return sorted(ids, key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).digest())[:size]


def evaluate_index(
    index: ProductIndex, query_ids: Sequence[str], k: int, max_queries: int | None = None
) -> dict[str, float]:
    """precision@k (same root category) per query kind, over the given products as queries
    (``query_sample`` of them with ``max_queries``)."""
    if max_queries is not None:
        query_ids = query_sample(query_ids, max_queries)
    positions = [p for p in (index.position(i) for i in query_ids) if p is not None]
    metrics: dict[str, float] = {}
    for kind in QUERY_KINDS:
        precision, used = precision_at_k(index, positions, k, kind)
        key = kind.replace("+", "_")
        metrics[f"precision_at_{k}_{key}"] = precision
        metrics[f"queries_{key}"] = float(used)
    return metrics
