"""The similar-products index as the API loads it: query vectors, search, filters (serve time).

A FAISS index over the catalogue in the combined classifier's space; building it
(neighbour lists, the text weight, writing the folder) is ``marketplace.search.build``'s.

Which space answers which query
-------------------------------
Every product is stored as one 2×H vector ``[text half, image half]`` where each half is
the L2-normalised hidden layer of the combined classifier's text or image branch (the
layer right before its logits, so the index and the classifier share their encoders and
what they learned about categories). A product without a photo has a zero image half.
Queries are built to match, and the inner product then gives a cosine per modality:

- text only: ``[t, 0]``: score = cos(text, text) against every product;
- photo only: ``[0, i]``: score = cos(image, image), over products that have a photo;
- photo and text: ``[w t, (1 - w) i]``: score = ``w`` cos(text) + ``(1 - w)`` cos(image);
  a product without a photo counts as image cosine 0, so listings whose photo *and* text
  match rank first. The text weight ``w`` is chosen by the index stage on the validation
  products (``index.text_weights``) and recorded in the index, so serving uses the same.

"More like this" for a catalogue product is the photo-and-text query of its own stored
vector. Those lists do not change until the index is rebuilt, so the index stage
precomputes the top ``index.neighbours`` of every product (one batched search) and the
unfiltered lookups are an array read; filtered ones, or a larger k, search.

The index folder (``index.faiss``, ``products.parquet``, ``index.json``, and
``neighbours.npz``) records the registered model version and the SHA-256 of the classifier
package that built it; ``ProductIndex.load`` refuses it for any other model.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch

from marketplace.models.classifier import CONFIG_FILE, WEIGHTS_FILE, ClassifierPackage

INDEX_FORMAT = 1
INDEX_FILE = "index.faiss"
PRODUCTS_FILE = "products.parquet"
META_FILE = "index.json"
NEIGHBOURS_FILE = "neighbours.npz"
RECORD_COLUMNS = ("product_id", "title", "price", "category", "location", "image_id")


class IndexMismatchError(ValueError):
    """An index was built by another model (version or package) than the one loaded."""


def package_sha256(folder: Path) -> str:
    """Content hash of a classifier package: identifies the exact weights and config.

    Serve time too: ``Marketplace`` loads an index only if it was built by this package."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@torch.inference_mode()
def branch_vectors(
    package: ClassifierPackage, text: np.ndarray | None, image: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Encoder embeddings -> L2-normalised hidden layers of the text and image branches."""
    if package.kind != "combined":
        raise ValueError(f"the index needs the combined model, not {package.kind!r}")
    head = package.head.eval()
    t = None if text is None else _normalise(head.text_head.embed(torch.from_numpy(text)).numpy())
    i = (
        None
        if image is None
        else _normalise(head.image_head.embed(torch.from_numpy(image)).numpy())
    )
    return t, i


def query_vector(
    text: np.ndarray | None, image: np.ndarray | None, half: int, text_weight: float = 0.5
) -> np.ndarray:
    """``[t, 0]``, ``[0, i]`` or ``[w t, (1 - w) i]`` (see the module docstring), ``[2H]``."""
    if text is None and image is None:
        raise ValueError("a query needs a text, a photo, or both")
    both = text is not None and image is not None
    zeros = np.zeros(half, dtype=np.float32)
    t = zeros if text is None else text * (text_weight if both else 1.0)
    i = zeros if image is None else image * (1.0 - text_weight if both else 1.0)
    return np.concatenate([t, i]).astype(np.float32)


@dataclass(frozen=True)
class IndexMeta:
    """What an index is and which model built it (``index.json``)."""

    format_version: int
    model_name: str
    model_version: str
    package_sha256: str
    image_encoder: dict[str, Any]
    text_encoder: dict[str, Any]
    factory: str
    nprobe: int
    ef_search: int
    dim: int
    size: int
    with_image: int
    space: str
    text_weight: float = 0.5  # w of photo-and-text queries (chosen on validation products)
    neighbours: int = 0  # "more like this" lists precomputed per product (0: none)


class ProductIndex:
    """The catalogue's FAISS index with its product records; search with filters."""

    def __init__(
        self,
        index: faiss.Index,
        products: pd.DataFrame,
        meta: IndexMeta,
        neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if index.ntotal != len(products):
            raise ValueError(f"index has {index.ntotal} vectors for {len(products)} products")
        if neighbours is not None and neighbours[0].shape != (len(products), meta.neighbours):
            raise ValueError(
                f"neighbour lists of shape {neighbours[0].shape} for {len(products)} products "
                f"x {meta.neighbours}"
            )
        self.index = index
        self._neighbours = neighbours
        self.meta = meta
        self.products = products.reset_index(drop=True)
        self._ids = self.products["product_id"].to_numpy(dtype=object)
        self._position = {pid: i for i, pid in enumerate(self._ids)}
        self._category = self.products["category"].to_numpy(dtype=object)
        self._price = self.products["price"].to_numpy(dtype=np.float64)
        self._has_image = self.products["image_id"].notna().to_numpy()
        self._records = [
            {k: (None if pd.isna(v) else v) for k, v in row.items()}
            for row in self.products[list(RECORD_COLUMNS)].to_dict("records")
        ]
        if "IVF" in meta.factory:
            faiss.extract_index_ivf(index).make_direct_map()  # for reconstruct()
        self.search_params = self._search_parameters(None)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def half(self) -> int:
        return self.meta.dim // 2

    def position(self, product_id: str) -> int | None:
        return self._position.get(product_id)

    def has_image(self, position: int) -> bool:
        return bool(self._has_image[position])

    def category(self, position: int) -> str:
        return str(self._category[position])

    def record(self, position: int) -> dict[str, Any]:
        return dict(self._records[position])

    def vector(self, position: int) -> np.ndarray:
        """The stored vector of a product (for "more like this")."""
        return self.index.reconstruct(position)

    def product_query(self, position: int) -> np.ndarray:
        """The query a listing itself would make: its text and, if any, its photo."""
        return self.product_queries(self.vector(position)[None], np.array([position]))[0]

    def product_queries(self, stored: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Product queries from stored vectors: both halves weighted where there is a photo."""
        w = self.meta.text_weight
        weights = np.where(self._has_image[positions, None], [w, 1.0 - w], [1.0, 0.0])
        scale = np.repeat(weights.astype(np.float32), self.half, axis=1)
        return (stored * scale).astype(np.float32)

    def with_meta(
        self, meta: IndexMeta, neighbours: tuple[np.ndarray, np.ndarray] | None = None
    ) -> ProductIndex:
        """A copy with other metadata and neighbour lists, sharing the FAISS index and the
        product arrays (read-only here) instead of rebuilding them."""
        variant = copy.copy(self)
        variant.meta = meta
        variant._neighbours = neighbours
        variant._params = variant._search_parameters(None)
        return variant

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for Ray workers in ``marketplace.search.build``): the FAISS index as
        its serialised bytes."""
        state = {k: v for k, v in self.__dict__.items() if k != "search_params"}
        return {**state, "index": faiss.serialize_index(self.index)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, index=faiss.deserialize_index(state["index"]))
        if "IVF" in self.meta.factory:
            faiss.extract_index_ivf(self.index).make_direct_map()
        self.search_params = self._search_parameters(None)

    @property
    def neighbour_lists(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The precomputed ``(positions, scores)`` arrays, ``[size, meta.neighbours]``, or None."""
        return self._neighbours

    def neighbours(self, position: int, k: int) -> list[tuple[int, float]] | None:
        """The precomputed top ``k`` of a product, or ``None`` if not precomputed that deep."""
        if self._neighbours is None or k > self.meta.neighbours:
            return None
        hits, scores = self._neighbours[0][position, :k], self._neighbours[1][position, :k]
        return [(int(p), float(s)) for p, s in zip(hits, scores, strict=True) if p >= 0]

    def _search_parameters(self, selector: faiss.IDSelector | None) -> Any:
        factory = self.meta.factory
        if "IVF" in factory:
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.meta.nprobe)
        if factory.startswith("HNSW"):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.meta.ef_search)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def allowed(
        self,
        *,
        category: str | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        require_image: bool = False,
    ) -> np.ndarray | None:
        """Boolean mask of products passing the filters; ``None`` when nothing is filtered."""
        if category is None and min_price is None and max_price is None and not require_image:
            return None
        mask = np.ones(len(self), dtype=bool)
        if category is not None:
            mask &= self._category == category
        if min_price is not None:
            mask &= self._price >= min_price  # NaN (no price) never passes a price filter
        if max_price is not None:
            mask &= self._price <= max_price
        if require_image:
            mask &= self._has_image
        return mask

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        mask: np.ndarray | None = None,
        exclude: int | None = None,
    ) -> list[tuple[int, float]]:
        """Top ``k`` ``(position, score)`` among products allowed by ``mask``, best first."""
        skip = None if exclude is None else [exclude]
        return self.search_many(query.reshape(1, -1), k, mask=mask, exclude=skip)[0]

    def search_many(
        self,
        queries: np.ndarray,
        k: int,
        *,
        mask: np.ndarray | None = None,
        exclude: Sequence[int] | None = None,
    ) -> list[list[tuple[int, float]]]:
        """``search`` for a batch of queries in one call (FAISS answers a batch with a
        matrix product); ``exclude[j]`` is left out of query ``j``'s results."""
        params = self.search_params
        if mask is not None:
            allowed = np.flatnonzero(mask)
            if len(allowed) == 0:
                return [[] for _ in range(len(queries))]
            params = self._search_parameters(faiss.IDSelectorBatch(allowed.astype(np.int64)))
        want = min(k + (1 if exclude is not None else 0), len(self))
        scores, positions = self.index.search(np.ascontiguousarray(queries), want, params=params)
        skip = list(exclude) if exclude is not None else [-1] * len(queries)
        return [
            [(int(p), float(s)) for p, s in zip(row, row_scores, strict=True) if p >= 0 and p != x][
                :k
            ]
            for row, row_scores, x in zip(positions, scores, skip, strict=True)
        ]

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        model_version: str | None = None,
        package_sha: str | None = None,
    ) -> ProductIndex:
        """Read an index folder; refuse it if it was built by another model version or package."""
        try:
            raw = json.loads((folder / META_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{folder} is not a product index: {exc}") from None
        if raw.get("format_version") != INDEX_FORMAT:
            raise ValueError(f"{folder}: unsupported index format {raw.get('format_version')}")
        # No build time in the folder: DVC hashes it, and the same inputs should give the
        # same output (the registry version records when); older indexes had one.
        raw.pop("built_at", None)
        meta = IndexMeta(**raw)
        if model_version is not None and meta.model_version != str(model_version):
            raise IndexMismatchError(
                f"index was built by {meta.model_name} version {meta.model_version}, "
                f"not version {model_version}"
            )
        if package_sha is not None and meta.package_sha256 != package_sha:
            raise IndexMismatchError(
                f"index was built by a different classifier package "
                f"({meta.package_sha256[:12]}, loaded {package_sha[:12]})"
            )
        index = faiss.read_index(str(folder / INDEX_FILE))
        neighbours = None
        if meta.neighbours:
            with np.load(folder / NEIGHBOURS_FILE) as stored:
                neighbours = (stored["positions"], stored["scores"])
        return cls(index, pd.read_parquet(folder / PRODUCTS_FILE), meta, neighbours)
