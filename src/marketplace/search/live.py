"""Live listings on top of the registry's index: what the API's similar products search.

The built index (``marketplace.search.index.ProductIndex``) is frozen when the pipeline builds it.
``LiveCatalogue`` lays the catalogue log (``marketplace.search.catalogue``) over it:

- a listing put or deleted through the API **hides** its built position (a FAISS
  ``IDSelectorNot`` over the hidden positions, so neither a search nor a precomputed "more
  like this" list can return it);
- a put listing's vector goes into a row of a matrix of live listings, searched exactly
  beside the built one (one matrix-vector product; a removed row is masked); the two hit
  lists are merged by score. A FAISS ``IndexIDMap2`` over ``IndexFlatIP`` did the same
  but cost 160 µs a query at 1,100 live listings against 56 µs for the product, which
  put "more like this" over its target (BENCHMARKS.md, "Live listings");
- "more like this" of a built product reads two short lists: its precomputed built
  neighbours (without hidden positions) and **its live neighbours**, the top
  ``index.neighbours`` live listings for its query, kept up to date as changes are applied
  (a put listing is scored against every built product's query once, one matrix product,
  and merged into the lists; a product whose list held a removed listing gets its list
  recomputed over the live rows). A query then reads ``k`` rows instead of scanning every
  live vector (3.3 MB at 800 live listings); filtered queries, a larger ``k`` or a live
  product's own query still scan.

Vectors are made as the index stage makes them: the frozen encoders' outputs (cached in
``catalogue_vectors`` by content hash and encoder spec), then this model's branch layers.
A new model version therefore replays the log with its own heads and reuses the cached
encoder vectors, so only the heads run again.

Each ``LiveCatalogue`` belongs to one loaded model and follows the log by ``seq``
(``sync``); ``replay`` is the same ``sync`` from ``seq`` 0, applied in one batch. Readers
never lock against a sync: the hidden positions and the live records are a snapshot
swapped in whole; a sync writes new rows only past the snapshot's row count (or into new
arrays when they grow), and a removal only clears a row's ``alive`` flag.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import torch

from marketplace.data.images import ImageError
from marketplace.features.preprocessing import listing_text
from marketplace.models.classifier import Encoded
from marketplace.search.catalogue import PUT, CatalogueLog, Change, fold, sha256
from marketplace.search.index import branch_vectors

if TYPE_CHECKING:
    from marketplace.inference import Filters, Marketplace

log = logging.getLogger("marketplace.search")

EMBED_BATCH = 32  # photos per encoder pass when a replay finds vectors missing
LIVE_CHUNK = 1024  # live rows scored against the built queries per matrix product
LIVE_TAIL = 256  # rows a query scans beside the lists (applied since their refresh); more: scan


def encoder_key(spec: dict[str, Any] | None, package_sha: str, finetuned: bool) -> str:
    """The cache key of an encoder: its spec, and the package for a fine-tuned one (its
    weights travel in the package, so another package is another encoder)."""
    key = json.dumps(spec or {}, sort_keys=True, separators=(",", ":"))
    if finetuned:
        key += f"@{package_sha}"
    # The encoder's name, then a hash of the rest (the column holds 256 characters).
    return f"{(spec or {}).get('encoder', 'none')}:{sha256(key)}"


@dataclass(frozen=True)
class Embedded:
    """A listing's vectors under one model: encoder outputs and the index's stored vector."""

    text_key: tuple[str, str]  # (content sha256, encoder key)
    text_vector: np.ndarray
    image_key: tuple[str, str] | None
    image_vector: np.ndarray | None
    stored: np.ndarray  # [t, i] in the index space (the image half zero without a photo)

    def cache_rows(self) -> list[tuple[str, str, np.ndarray]]:
        rows = [(*self.text_key, self.text_vector)]
        if self.image_key is not None and self.image_vector is not None:
            rows.append((*self.image_key, self.image_vector))
        return rows


@dataclass(frozen=True)
class Entry:
    """A live listing as served: its record, where its vector is, what filters see."""

    row: int  # its row in the live matrix
    record: dict[str, Any]  # RECORD_COLUMNS, as the built index's records
    description: str | None
    category_source: str | None
    seq: int
    ts: float
    image_sha256: str | None
    vector: np.ndarray = field(repr=False)

    @property
    def has_image(self) -> bool:
        return self.image_sha256 is not None


class _Rows:
    """The live listings' vectors and filter columns, one row per put (grown by doubling;
    a row is never reused, so a reader's snapshot stays consistent)."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
        self.alive = np.zeros(capacity, dtype=bool)
        self.price = np.full(capacity, np.nan)
        self.category = np.empty(capacity, dtype=object)
        self.has_image = np.zeros(capacity, dtype=bool)
        self.entries: list[Entry | None] = [None] * capacity

    def grown(self, needed: int) -> _Rows:
        """Self if ``needed`` rows fit, else a copy with room (readers keep the old one)."""
        capacity = len(self.alive)
        if needed <= capacity:
            return self
        while capacity < needed:
            capacity *= 2
        new = _Rows(self.vectors.shape[1], capacity)
        n = len(self.alive)
        new.vectors[:n], new.alive[:n], new.price[:n] = self.vectors, self.alive, self.price
        new.category[:n], new.has_image[:n] = self.category, self.has_image
        new.entries[:n] = self.entries
        return new


@dataclass(frozen=True)
class _State:
    """What readers see, swapped whole: hidden built positions and the live listings."""

    hidden: np.ndarray  # bool per built position
    n_hidden: int
    selector: Any  # IDSelectorNot over the hidden positions (None when none)
    keep: Any  # the inner selector, kept alive for ``selector``
    entries: dict[str, Entry]  # live product id -> entry
    rows: _Rows
    n_rows: int  # rows written when this snapshot was taken
    deleted: frozenset[str]  # deleted through the API (built or live)
    # Each built product's live neighbours: the top ``depth`` alive live rows for its
    # query (-1 / -inf past the end), best first; ``None`` when the index keeps no lists.
    live_hits: np.ndarray | None = None  # int32 [built, depth]
    live_scores: np.ndarray | None = None  # float32 [built, depth]
    lists_rows: int = 0  # live rows the lists cover; rows past it are scanned (a short tail)


class LiveCatalogue:
    """The catalogue log applied to one loaded model's index."""

    def __init__(self, market: Marketplace) -> None:
        classifier = market.classifier
        package = classifier.package
        if package.kind != "combined":
            raise ValueError(f"live listings need the combined model, not {package.kind!r}")
        self.market = market
        self.index = market.index
        self.seq = 0  # the last log row applied
        sha = self.index.meta.package_sha256
        self.text_encoder = encoder_key(
            package.text_spec, sha, bool(package.encoder_overrides("text_encoder."))
        )
        self.image_encoder = encoder_key(
            package.image_spec, sha, bool(package.encoder_overrides("image_encoder."))
        )
        self._sync_lock = threading.Lock()  # one sync at a time
        n = len(self.index)
        rows = _Rows(self.index.meta.dim)
        self.depth = int(self.index.meta.neighbours)  # live neighbours kept per product
        hits = scores = None
        if self.depth:
            hits = np.full((n, self.depth), -1, dtype=np.int32)
            scores = np.full((n, self.depth), -np.inf, dtype=np.float32)
        self._state = _State(
            np.zeros(n, dtype=bool), 0, None, None, {}, rows, 0, frozenset(), hits, scores
        )
        self._built: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._removed: list[int] = []  # rows removed since the lists were last refreshed
        self._lists_lock = threading.Lock()  # one lists refresh at a time
        self.replay_seconds = 0.0
        self.computed_vectors = 0  # encoder vectors not found in the cache (replay/sync)

    # ---- embedding -------------------------------------------------------------------

    def embed(
        self,
        *,
        title: str,
        description: str | None,
        price: float | None,
        image: bytes | None,
    ) -> tuple[Embedded, list[tuple[str, float]]]:
        """Encode a listing once: its vectors and this model's category probabilities
        (most likely first). ``ImageError`` for a photo that does not decode."""
        classifier = self.market.classifier
        text = listing_text(title, description) or title  # a title of control characters
        if not text:
            raise ValueError("a listing needs a title")
        text_vector = classifier.text_embeddings([text])
        if image is not None:
            image_vector, has_image = classifier.image_embeddings([image])
        else:
            image_vector = torch.zeros(1, self._image_dim())
            has_image = torch.zeros(1)
        encoded = Encoded([text], image_vector, has_image, text_vector)
        probabilities = classifier.predict_encoded(encoded, [price])[0]
        categories = classifier.categories
        ranked = [(categories[i], float(probabilities[i])) for i in np.argsort(-probabilities)]
        text_np = text_vector[0].numpy()
        image_np = image_vector[0].numpy() if image is not None else None
        stored = self._stored(text_np[None], None if image_np is None else image_np[None])[0]
        embedded = Embedded(
            (sha256(text), self.text_encoder),
            text_np,
            None if image is None else (sha256(image), self.image_encoder),
            image_np,
            stored,
        )
        return embedded, ranked

    def _image_dim(self) -> int:
        encoder = self.market.classifier.image_encoder
        assert encoder is not None
        return int(encoder.embedding_dim)

    def _stored(self, text: np.ndarray, image: np.ndarray | None) -> np.ndarray:
        """Encoder outputs -> stored index vectors (all rows with a photo, or none)."""
        t, i = branch_vectors(self.market.classifier.package, text, image)
        assert t is not None
        i = np.zeros_like(t) if i is None else i
        return np.concatenate([t, i], axis=1).astype(np.float32)

    def _vectors(self, catalogue: CatalogueLog, puts: Sequence[Change]) -> dict[int, np.ndarray]:
        """Stored vectors of put changes (by seq): cached encoder vectors, the encoders
        only for those missing (stored back into the cache), then the heads in one batch."""
        if not puts:
            return {}
        texts = [listing_text(c.title, c.description) or c.title or "" for c in puts]
        text_keys = [(sha256(t), self.text_encoder) for t in texts]
        image_keys = [
            (c.image_sha256, self.image_encoder) if c.image_sha256 else None for c in puts
        ]
        cached = catalogue.cached_vectors([*text_keys, *(k for k in image_keys if k)])
        computed: list[tuple[str, str, np.ndarray]] = []
        classifier = self.market.classifier
        missing_text = sorted(
            {k: t for k, t in zip(text_keys, texts, strict=True) if k not in cached}.items()
        )
        for start in range(0, len(missing_text), 256):
            chunk = missing_text[start : start + 256]
            out = classifier.text_embeddings([t for _, t in chunk]).numpy()
            for (key, _), vector in zip(chunk, out, strict=True):
                cached[key] = vector
                computed.append((*key, vector))
        missing_image = {
            k: c.seq for c, k in zip(puts, image_keys, strict=True) if k and k not in cached
        }
        missing = list(missing_image.items())
        for start in range(0, len(missing), EMBED_BATCH):
            chunk = missing[start : start + EMBED_BATCH]
            photos = catalogue.images(seq for _, seq in chunk)
            for key, seq in chunk:
                try:
                    vector = classifier.image_embeddings([photos[seq]])[0][0].numpy()
                except (KeyError, ImageError) as exc:  # accepted once, so not expected
                    log.warning("live listing seq %d: photo unusable (%s); text only", seq, exc)
                    continue
                cached[key] = vector
                computed.append((*key, vector))
        if computed:
            self.computed_vectors += len(computed)
            catalogue.cache_vectors(computed)
        text = np.stack([cached[k] for k in text_keys]).astype(np.float32)
        has_image = np.array([k is not None and k in cached for k in image_keys])
        image = np.zeros((len(puts), self._image_dim()), dtype=np.float32)
        for row in np.flatnonzero(has_image):
            image[row] = cached[image_keys[row]]  # type: ignore[index]
        stored = self._stored(text, image)
        stored[~has_image, self.index.half :] = 0.0
        return {c.seq: v for c, v in zip(puts, stored, strict=True)}

    # ---- following the log -----------------------------------------------------------

    def replay(self, catalogue: CatalogueLog, *, lists: bool = True) -> int:
        """Apply the whole log (at load); returns the number of live changes applied.
        ``lists=False`` leaves the live neighbour lists to ``refresh_lists`` (the API's
        ``follow`` builds them after the model is served; queries scan until then)."""
        started = time.perf_counter()
        applied = self.sync(catalogue, lists=lists)
        self.replay_seconds = time.perf_counter() - started
        return applied

    def sync(
        self,
        catalogue: CatalogueLog,
        known: dict[int, np.ndarray] | None = None,
        *,
        lists: bool = True,
    ) -> int:
        """Apply the log rows after ``self.seq``; ``known`` holds stored vectors already
        computed (by seq: the change this process just wrote). Returns rows applied.

        ``lists=False`` (a write's own request) leaves the live neighbour lists to the next
        sync: the new rows are served at once from the scanned tail, and the request does
        not wait for the lists' matrix product."""
        with self._sync_lock:
            changes = catalogue.changes_since(self.seq)
            if changes:
                latest = fold(changes)
                puts = [c for c in latest.values() if c.op == PUT and c.seq not in (known or {})]
                vectors = {**(known or {}), **self._vectors(catalogue, puts)}
                self._apply(latest, vectors)
                self.seq = changes[-1].seq
        if lists:
            self.refresh_lists()
        return len(changes)

    def refresh_lists(self) -> None:
        """Bring the live neighbour lists up to the applied rows. The matrix products run
        outside the sync lock (a write's own sync does not wait for them); rows applied
        meanwhile stay in the scanned tail, rows removed meanwhile wait for the next
        refresh (a query skips them, and scans if that leaves a list short)."""
        with self._lists_lock:
            with self._sync_lock:
                state = self._state
                removed, self._removed = self._removed, []
            if state.live_hits is None or (state.lists_rows == state.n_rows and not removed):
                return
            added = range(state.lists_rows, state.n_rows)
            hits, scores = self._live_lists(state, state.rows, added, removed)
            with self._sync_lock:
                self._state = replace(
                    self._state, live_hits=hits, live_scores=scores, lists_rows=state.n_rows
                )

    def _apply(self, latest: dict[str, Change], vectors: dict[int, np.ndarray]) -> None:
        state = self._state
        hidden = state.hidden.copy()
        entries = dict(state.entries)
        deleted = set(state.deleted)
        puts = [c for c in latest.values() if c.op == PUT]
        rows = state.rows.grown(state.n_rows + len(puts))
        row = state.n_rows
        removed: list[int] = []
        for product_id, change in latest.items():
            if (old := entries.pop(product_id, None)) is not None:
                removed.append(old.row)
            position = self.index.position(product_id)
            if position is not None:
                hidden[position] = True
            if change.op != PUT:
                deleted.add(product_id)
                continue
            deleted.discard(product_id)
            entry = Entry(
                row=row,
                record={
                    "product_id": product_id,
                    "title": change.title,
                    "price": change.price,
                    "category": change.category,
                    "location": change.location,
                    "image_id": product_id if change.has_image else None,
                },
                description=change.description,
                category_source=change.category_source,
                seq=change.seq,
                ts=change.ts,
                image_sha256=change.image_sha256,
                vector=vectors[change.seq],
            )
            entries[product_id] = entry
            rows.vectors[row] = entry.vector
            rows.price[row] = np.nan if change.price is None else change.price
            rows.category[row] = change.category
            rows.has_image[row] = entry.has_image
            rows.entries[row] = entry
            rows.alive[row] = True
            row += 1
        positions = np.flatnonzero(hidden).astype(np.int64)
        inner = selector = None
        if len(positions):
            inner = faiss.IDSelectorBatch(positions)
            selector = faiss.IDSelectorNot(inner)
        rows.alive[removed] = False
        self._removed.extend(removed)
        self._state = replace(  # the live neighbour lists carry over (``refresh_lists``)
            state,
            hidden=hidden,
            n_hidden=len(positions),
            selector=selector,
            keep=inner,
            entries=entries,
            rows=rows,
            n_rows=row,
            deleted=frozenset(deleted),
        )

    # ---- the built products' live neighbours -----------------------------------------

    def _built_queries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every built product's stored vector and its query's two half weights: the
        query is ``[wt * text, wi * image]`` (``ProductIndex.product_queries``). A flat
        index's vectors are read in place (no copy); others are reconstructed once."""
        if self._built is None:
            index = self.index
            n, dim = len(index), index.meta.dim
            inner = faiss.downcast_index(index.index)
            if isinstance(inner, faiss.IndexFlat) and n:
                vectors = faiss.rev_swig_ptr(inner.get_xb(), n * dim).reshape(n, dim)
            else:
                vectors = index.index.reconstruct_n(0, n) if n else np.zeros((0, dim))
            ones = np.ones((n, 2 * index.half), dtype=np.float32)
            weights = index.product_queries(ones, np.arange(n))  # [wt.., wi..] per row
            self._built = (vectors, weights[:, 0].copy(), weights[:, -1].copy())
        return self._built

    def _scores(self, positions: np.ndarray | slice, vectors: np.ndarray) -> np.ndarray:
        """Scores of live ``vectors`` [m, dim] for built products' queries: [len, m]."""
        built, wt, wi = self._built_queries()
        half = self.index.half
        x = built[positions]
        scores = x[:, :half] @ vectors[:, :half].T
        scores *= wt[positions, None]
        image = x[:, half:] @ vectors[:, half:].T
        image *= wi[positions, None]
        scores += image
        return scores

    def _top(
        self, hits: np.ndarray, scores: np.ndarray, new_hits: np.ndarray, new_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``depth`` of two lists per product, best first."""
        all_hits = np.concatenate([hits, new_hits], axis=1)
        all_scores = np.concatenate([scores, new_scores], axis=1)
        if all_hits.shape[1] > self.depth:
            keep = np.argpartition(-all_scores, self.depth - 1, axis=1)[:, : self.depth]
            all_hits = np.take_along_axis(all_hits, keep, axis=1)
            all_scores = np.take_along_axis(all_scores, keep, axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")
        return np.take_along_axis(all_hits, order, axis=1), np.take_along_axis(
            all_scores, order, axis=1
        )

    def _live_lists(
        self, state: _State, rows: _Rows, added: range, removed: list[int]
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The live neighbour lists after an apply (new arrays: readers keep theirs).
        Added rows are scored against every built query and merged in; a product whose
        list held a removed row is recomputed over all alive rows (its list may have cut
        a row that now belongs in it)."""
        if state.live_hits is None or state.live_scores is None:
            return None, None
        if not len(added) and not removed:
            return state.live_hits, state.live_scores
        hits, scores = state.live_hits.copy(), state.live_scores.copy()
        redo = np.zeros(len(hits), dtype=bool)
        if removed:
            redo = np.isin(hits, np.asarray(removed, dtype=np.int32)).any(axis=1)
        keep = np.flatnonzero(~redo)
        new_rows = np.arange(added.start, added.stop, dtype=np.int32)
        new_rows = new_rows[rows.alive[new_rows]]  # put and replaced again meanwhile: skip
        if len(new_rows) and len(keep):
            whole = len(keep) == len(hits)
            for start in range(0, len(new_rows), LIVE_CHUNK):
                chunk = new_rows[start : start + LIVE_CHUNK]
                at = slice(None) if whole else keep
                new_scores = self._scores(at, rows.vectors[chunk]).astype(np.float32)
                # Only the products whose list a new row enters change (few, for a put).
                enters = np.flatnonzero((new_scores > scores[at, -1:]).any(axis=1))
                if not len(enters):
                    continue
                where = enters if whole else keep[enters]
                new_hits = np.broadcast_to(chunk, (len(enters), len(chunk)))
                hits[where], scores[where] = self._top(
                    hits[where], scores[where], new_hits, new_scores[enters]
                )
        if redo.any():
            positions = np.flatnonzero(redo)
            alive = np.flatnonzero(rows.alive[: added.stop]).astype(np.int32)
            hits[positions], scores[positions] = -1, -np.inf
            for start in range(0, len(alive), LIVE_CHUNK):
                chunk = alive[start : start + LIVE_CHUNK]
                new_scores = self._scores(positions, rows.vectors[chunk]).astype(np.float32)
                new_hits = np.broadcast_to(chunk, new_scores.shape)
                hits[positions], scores[positions] = self._top(
                    hits[positions], scores[positions], new_hits, new_scores
                )
        return hits, scores

    def _live_neighbours(
        self, state: _State, position: int, query: np.ndarray, k: int
    ) -> list[tuple[Entry, float]] | None:
        """A built product's top ``k`` live listings: its list's first ``k`` alive rows and
        the rows applied since the list was refreshed (scored here); ``None`` when the list
        cannot answer (too deep a ``k``; lists not built yet or far behind; removals left
        it short of ``k`` while it had cut rows), and the caller scans."""
        if state.live_hits is None or state.live_scores is None or k > self.depth:
            return None
        start, stop = state.lists_rows, state.n_rows
        if stop - start > LIVE_TAIL:
            return None
        rows = state.rows
        hits = state.live_hits[position]
        listed = hits >= 0
        usable = listed & rows.alive[np.where(listed, hits, 0)]  # removed since: skipped
        picked = np.flatnonzero(usable)[:k]
        if len(picked) < k and listed[-1]:
            return None  # rows it cut may now belong in the top k: scan
        found, scores = hits[picked], state.live_scores[position, picked]
        if stop > start:
            tail = np.flatnonzero(rows.alive[start:stop])
            found = np.concatenate([found, tail + start])
            scores = np.concatenate([scores, (rows.vectors[start:stop] @ query)[tail]])
            order = np.argsort(-scores, kind="stable")[:k]
            found, scores = found[order], scores[order]
        entries = rows.entries
        return [(entries[r], s) for r, s in zip(found.tolist(), scores.tolist(), strict=True)]  # type: ignore[misc]

    # ---- reading ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Live listings (put through the API and not deleted)."""
        return len(self._state.entries)

    def describe(self) -> dict[str, Any]:
        state = self._state
        return {
            "seq": self.seq,
            "live": len(state.entries),
            "hidden_built": state.n_hidden,
            "deleted": len(state.deleted),
            "replay_seconds": round(self.replay_seconds, 3),
            "computed_vectors": self.computed_vectors,
        }

    def entry(self, product_id: str) -> Entry | None:
        return self._state.entries.get(product_id)

    def record(self, product_id: str) -> dict[str, Any] | None:
        """The listing as served now (live or built), or ``None`` (unknown or deleted)."""
        state = self._state
        if (entry := state.entries.get(product_id)) is not None:
            return {
                **entry.record,
                "description": entry.description,
                "category_source": entry.category_source,
                "live": True,
                "seq": entry.seq,
                "updated_at": entry.ts,
            }
        position = self.index.position(product_id)
        if position is None or state.hidden[position]:
            return None
        return {
            **self.index.record(position),
            "description": None,
            "category_source": None,
            "live": False,
            "seq": None,
            "updated_at": None,
        }

    def exists(self, product_id: str) -> bool:
        state = self._state
        if product_id in state.entries:
            return True
        position = self.index.position(product_id)
        return position is not None and not state.hidden[position]

    def search(
        self,
        query: np.ndarray,
        k: int,
        filters: Filters,
        *,
        require_image: bool = False,
        exclude: str | None = None,
    ) -> list[dict[str, Any]]:
        """Top ``k`` records (with ``score``) over the built and the live listings."""
        state = self._state
        built = self._search_built(state, query, k, filters, require_image, exclude)
        return self._merge(
            state, built, self._search_live(state, query, k, filters, require_image, exclude), k
        )

    def similar_to_product(self, product_id: str, k: int, filters: Filters) -> list[dict[str, Any]]:
        """More like this listing (itself excluded); ``KeyError`` if unknown or deleted."""
        state = self._state
        if (entry := state.entries.get(product_id)) is not None:
            w = self.index.meta.text_weight if entry.has_image else 1.0
            query = entry.vector.copy()
            query[: self.index.half] *= w
            query[self.index.half :] *= 1.0 - w
            return self.search(query, k, filters, exclude=product_id)
        position = self.index.position(product_id)
        if position is None or state.hidden[position]:
            raise KeyError(product_id)
        unfiltered = filters.category is None and filters.min_price is None
        unfiltered = unfiltered and filters.max_price is None
        built = None
        if unfiltered:
            built = self._precomputed(state, position, k)
        query = self.index.product_query(position)
        if built is None:
            built = self._search_built(state, query, k, filters, False, product_id)
        if not state.entries:
            return self._merge(state, built, [], k)
        live = self._live_neighbours(state, position, query, k) if unfiltered else None
        if live is None:
            live = self._search_live(state, query, k, filters, False, None)
        return self._merge(state, built, live, k)

    def _precomputed(self, state: _State, position: int, k: int) -> list[tuple[int, float]] | None:
        """The precomputed list without hidden positions, if it still holds ``k``."""
        if state.n_hidden == 0:
            return self.index.neighbours(position, k)
        depth = self.index.meta.neighbours
        lists = self.index.neighbour_lists
        if k > depth or lists is None:
            return None
        hits, scores = lists[0][position], lists[1][position]
        listed = hits >= 0
        kept = np.flatnonzero(listed & ~state.hidden[np.where(listed, hits, 0)])[:k]
        if len(kept) >= k or listed.sum() < depth:  # a short list is the whole catalogue
            return list(zip(hits[kept].tolist(), scores[kept].tolist(), strict=True))
        return None

    def _search_built(
        self,
        state: _State,
        query: np.ndarray,
        k: int,
        filters: Filters,
        require_image: bool,
        exclude: str | None,
    ) -> list[tuple[int, float]]:
        index = self.index
        skip = None if exclude is None else index.position(exclude)
        mask = index.allowed(
            category=filters.category,
            min_price=filters.min_price,
            max_price=filters.max_price,
            require_image=require_image,
        )
        if mask is not None or state.selector is None:
            if mask is not None and state.n_hidden:
                mask = mask & ~state.hidden
            return index.search(query, k, mask=mask, exclude=skip)
        want = min(k + (skip is not None), len(index) - state.n_hidden)
        if want <= 0:
            return []
        params = index._search_parameters(state.selector)  # the built index's own settings
        scores, positions = index.index.search(query.reshape(1, -1), want, params=params)
        hits = [(int(p), float(s)) for p, s in zip(positions[0], scores[0], strict=True)]
        return [(p, s) for p, s in hits if p >= 0 and p != skip][:k]

    def _search_live(
        self,
        state: _State,
        query: np.ndarray,
        k: int,
        filters: Filters,
        require_image: bool,
        exclude: str | None,
    ) -> list[tuple[Entry, float]]:
        n = state.n_rows
        if not state.entries or n == 0:
            return []
        rows = state.rows
        scores = rows.vectors[:n] @ query
        allowed = rows.alive[:n].copy()
        if require_image:
            allowed &= rows.has_image[:n]
        if filters.category is not None:
            allowed &= rows.category[:n] == filters.category
        if filters.min_price is not None:
            allowed &= rows.price[:n] >= filters.min_price  # NaN (no price) never passes
        if filters.max_price is not None:
            allowed &= rows.price[:n] <= filters.max_price
        if exclude is not None and (mine := state.entries.get(exclude)) is not None:
            allowed[mine.row] = False
        candidates = np.flatnonzero(allowed)
        if len(candidates) > k:
            top = np.argpartition(-scores[candidates], k)[:k]
            candidates = candidates[top]
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        return [(rows.entries[r], float(scores[r])) for r in order]  # type: ignore[misc]

    def _merge(
        self,
        state: _State,
        built: list[tuple[int, float]],
        live: list[tuple[Entry, float]],
        k: int,
    ) -> list[dict[str, Any]]:
        records = [(s, self.index.record(p)) for p, s in built]
        records += [(s, dict(e.record)) for e, s in live]
        if live:
            records.sort(key=lambda pair: -pair[0])
        return [{**r, "score": round(s, 6)} for s, r in records[:k]]


def attach(market: Marketplace, catalogue: CatalogueLog, *, lists: bool = True) -> Marketplace:
    """``market`` with the log replayed onto its index (``market.live``); at load.
    ``lists=False``: the live neighbour lists are left to ``refresh_lists``."""
    live = LiveCatalogue(market)
    applied = live.replay(catalogue, lists=lists)
    market.live = live
    log.info(
        "catalogue log replayed onto %s version %s: %d changes, %d live listings, %.2f s",
        market.info.name,
        market.info.version,
        applied,
        live.size,
        live.replay_seconds,
    )
    return market
