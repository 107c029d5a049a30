"""Watching production: the prediction log, live accuracy, shadow and canary versions.

Every answer of ``/predict``, ``/similar`` and ``/products/{id}/similar`` becomes a row of
the prediction log (``marketplace.mlops.log_schema``) through
``marketplace.mlops.prediction_log.PredictionLog``: queued without blocking, written by a
background thread in batches. ``/predict`` and ``/similar`` (tens of ms of model work)
build their row on the request; ``/products/{id}/similar`` (~0.4 ms in all) queues only a
tuple of its raw facts (``PredictionLog.record_answer``), and the writer builds the row
(the client hash, the JSON of the ids), so its event loop does almost nothing more. The
writer is a child process by default (``MARKETPLACE_PREDICTION_LOG_PROCESS``): a writer
thread would hold the GIL ~20 µs per row against the event loop.

A second version can watch the same traffic:

- **shadow** (``MARKETPLACE_SHADOW_ALIAS``): after the answer is computed, the request's
  listing is queued for the shadow version, which scores it in the background; its row has
  the same request id and ``role = "shadow"``. When the shadow uses the same frozen
  encoders as the served version (the usual case: a retrained head), it reuses the vectors
  the served version computed and runs only its head, so shadowing costs little. Nothing a
  client receives depends on it; a full shadow queue skips the request (counted).
- **canary** (``MARKETPLACE_CANARY_PERCENT``): a stable share of clients, by a keyed hash
  of their key (``X-Client-ID``, else their address), is answered by the canary version on
  every endpoint; the log's ``client`` column holds that hash.

Feedback (``serving/routers/feedback.py``) is scored against the logged answers of its
request, per version and query kind, into ``marketplace_live_accuracy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from asgi_correlation_id import correlation_id
from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.concurrency import run_in_threadpool

from marketplace.core.db import default_url, redacted
from marketplace.inference import Listing, Marketplace, Prediction, SimilarAnswer
from marketplace.mlops import log_schema
from marketplace.mlops.prediction_log import (
    PredictionLog,
    client_hash,
    top_k_json,
    vector_bytes,
)
from marketplace.models.query import query_kind
from serving.settings import Settings
from serving.state import ModelHolder

log = logging.getLogger("serving")

SHADOW_QUEUE = 256  # listings waiting for the shadow version; more are skipped (counted)
SHADOW_BATCH = 16
STARTED = "marketplace.started"  # the scope key StartTime sets


def in_canary(client: str, percent: float) -> bool:
    """Whether the client with hash ``client`` belongs to the canary's ``percent`` %:
    its hash's first 32 bits, uniform, against the share (stable for a client)."""
    return int(client[:8], 16) % 10_000 < percent * 100


class LiveAccuracy:
    """Feedback categories scored against the answers, over a rolling window of the last
    ``window`` per (model version, query kind), exported as a gauge."""

    def __init__(self, gauge: Gauge, window: int) -> None:
        self.gauge = gauge
        self.window = window
        self._outcomes: dict[tuple[str, str], deque[bool]] = {}
        self._lock = threading.Lock()  # feedback is scored in worker threads

    def add(self, version: str, kind: str, correct: bool) -> None:
        with self._lock:
            outcomes = self._outcomes.setdefault((version, kind), deque(maxlen=self.window))
            outcomes.append(correct)
            self.gauge.labels(version, kind).set(sum(outcomes) / len(outcomes))

    def value(self, version: str, kind: str) -> float | None:
        with self._lock:
            outcomes = self._outcomes.get((version, kind))
            return None if not outcomes else sum(outcomes) / len(outcomes)


class WatchMetrics:
    """The watch's Prometheus metrics, in the app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.log_rows = Counter(
            "marketplace_prediction_log_rows",
            "Prediction log rows written to the database",
            registry=registry,
        )
        self.log_dropped = Counter(
            "marketplace_prediction_log_dropped",
            "Prediction log rows dropped because the writer's queue was full",
            registry=registry,
        )
        self.log_pending = Gauge(
            "marketplace_prediction_log_pending",
            "Prediction log rows waiting to be written",
            registry=registry,
        )
        self.feedback = Counter(
            "marketplace_feedback",
            "Feedback stored, by type (category, click)",
            ["type"],
            registry=registry,
        )
        self.live_accuracy = Gauge(
            "marketplace_live_accuracy",
            "Share of feedback categories equal to the predicted one, over the last "
            "MARKETPLACE_LIVE_ACCURACY_WINDOW per model version and query kind",
            ["model_version", "query_kind"],
            registry=registry,
        )
        self.shadow = Counter(
            "marketplace_shadow_predictions",
            "Shadow scorings by outcome (agree, disagree with the served category; "
            "error; skipped: the shadow queue was full)",
            ["outcome"],
            registry=registry,
        )
        self.second_model = Gauge(
            "marketplace_second_model_info",
            "The shadow/canary version loaded (value 1)",
            ["alias", "version"],
            registry=registry,
        )


@dataclass
class _Shadowed:
    served: Marketplace
    prediction: Prediction
    listing: Listing
    row: dict[str, Any]  # the served row: request id, input summary, client


class Watch:
    """The app's prediction log, second version (shadow or canary) and live accuracy."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = WatchMetrics(registry)
        self.live = LiveAccuracy(self.metrics.live_accuracy, settings.live_accuracy_window)
        self.log: PredictionLog | None = None
        self.salt = settings.client_key_salt.get_secret_value().encode()[:64]
        self.second: ModelHolder | None = None  # the shadow/canary version
        self.second_alias = settings.shadow_alias or settings.canary_model_alias
        self.shadow = settings.shadow_alias is not None
        self.canary_percent = settings.canary_percent if settings.canary_model_alias else 0.0
        if settings.shadow_alias and settings.canary_model_alias not in (
            None,
            settings.shadow_alias,
        ):
            raise ValueError("the shadow and canary aliases must be the same version")
        self._shadow_queue: asyncio.Queue[_Shadowed] | None = None
        self._shadow_task: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------

    async def start(self, load: Callable[[str], Callable[[], Marketplace]]) -> None:
        """Open the log (its tables created where missing) and load the second version;
        ``load(alias)`` returns the loader of that alias (the production loader's kind)."""
        if self.settings.prediction_log:
            url = self.settings.prediction_log_url or default_url("prediction_log")
            metrics = self.metrics
            self.log = PredictionLog(
                url,
                queue_size=self.settings.prediction_log_queue,
                flush_interval_s=self.settings.prediction_log_flush_s,
                salt=self.salt,
                process=self.settings.prediction_log_process,
                on_drop=metrics.log_dropped.inc,
                on_write=lambda n, _s: metrics.log_rows.inc(n),
            )
            await run_in_threadpool(self.log.start)
            metrics.log_pending.set_function(lambda: self.log.pending if self.log else 0)
            log.info("prediction log: %s", redacted(url))
            await run_in_threadpool(self._seed_live_accuracy)
        if self.second_alias:
            self.second = ModelHolder(load(self.second_alias))
            outcome = await self.second.reload()
            if outcome.reloaded:
                self.metrics.second_model.labels(self.second_alias, str(outcome.version)).set(1)
            else:  # production serves alone; the shadow/canary resumes on a reload
                log.error("%s version not loaded: %s", self.second_alias, outcome.detail)
        if self.shadow:
            self._shadow_queue = asyncio.Queue(SHADOW_QUEUE)
            self._shadow_task = asyncio.create_task(self._shadow_worker(), name="shadow")

    async def stop(self) -> None:
        """Score what the shadow queue holds, then write every queued row."""
        if self._shadow_task is not None and self._shadow_queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._shadow_queue.join(), 10)
            self._shadow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._shadow_task
        if self.log is not None:
            await run_in_threadpool(self.log.close)

    async def reload_second(self) -> None:
        """Reload the shadow/canary version (the alias may have moved)."""
        if self.second is not None:
            outcome = await self.second.reload()
            if outcome.reloaded:
                self.metrics.second_model.clear()
                self.metrics.second_model.labels(self.second_alias, str(outcome.version)).set(1)

    # -- canary ------------------------------------------------------------------------

    def client_key(self, request: Request) -> str:
        """The client's key, unhashed: ``X-Client-ID`` (the setting), else its address."""
        key = request.headers.get(self.settings.client_header)
        if not key:
            key = request.client.host if request.client else ""
        return key

    def client(self, request: Request) -> str:
        return client_hash(self.client_key(request), self.salt)

    def route(self, request: Request, production: Marketplace) -> Marketplace:
        """The model that answers this request: the canary for its share of clients."""
        if self.canary_percent and self.second is not None:
            canary = self.second.current
            if canary is not None and in_canary(self.client(request), self.canary_percent):
                return canary
        return production

    # -- rows --------------------------------------------------------------------------

    def _row(self, request: Request, endpoint: str, market: Marketplace) -> dict[str, Any]:
        info = market.info
        started = request.scope.get(STARTED)
        return {
            "request_id": correlation_id.get() or "",
            "ts": time.time(),
            "endpoint": endpoint,
            "model_name": info.name,
            "model_version": info.version,
            "role": "served",
            "client": self.client(request),
            "latency_ms": None if started is None else 1000 * (time.perf_counter() - started),
        }

    def _shadow(self, item: _Shadowed) -> None:
        second = self.second.current if self.second is not None else None
        if self._shadow_queue is None or second is None or second is item.served:
            return
        try:
            self._shadow_queue.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.shadow.labels("skipped").inc()

    async def _shadow_worker(self) -> None:
        assert self._shadow_queue is not None
        while True:
            batch = [await self._shadow_queue.get()]
            while len(batch) < SHADOW_BATCH and not self._shadow_queue.empty():
                batch.append(self._shadow_queue.get_nowait())
            try:
                await self._score_shadow(batch)
            except Exception as exc:  # the shadow never breaks serving; count and say why
                self.metrics.shadow.labels("error").inc(len(batch))
                log.warning("shadow scoring of %d listings failed: %s", len(batch), exc)
            finally:
                for _ in batch:
                    self._shadow_queue.task_done()

    async def _score_shadow(self, batch: list[_Shadowed]) -> None:
        second = self.second.current if self.second is not None else None
        if second is None:
            return
        for served in {id(s.served): s.served for s in batch}.values():
            items = [s for s in batch if s.served is served and s.served is not second]
            if not items:
                continue
            listings = [s.listing for s in items]
            started = time.perf_counter()
            if second.classifier.reuses_encoders_of(served.classifier):
                encoded = [s.prediction.encoded for s in items]
                rankings = await run_in_threadpool(second.rescore, listings, encoded)
            else:
                predictions = await run_in_threadpool(second.predict_encoded_many, listings)
                rankings = [p.ranking for p in predictions]
            latency_ms = 1000 * (time.perf_counter() - started) / len(items)
            for item, ranking in zip(items, rankings, strict=True):
                agree = ranking[0][0] == item.prediction.ranking[0][0]
                self.metrics.shadow.labels("agree" if agree else "disagree").inc()
                if self.log is not None:
                    self.log.record(
                        {
                            **item.row,
                            "ts": time.time(),
                            "model_name": second.info.name,
                            "model_version": second.info.version,
                            "role": "shadow",
                            "category": ranking[0][0],
                            "probability": ranking[0][1],
                            "top_k": _ranking_json(ranking),
                            "latency_ms": latency_ms,
                            "image_vector": None,
                            "text_vector": None,
                        }
                    )

    # -- feedback ----------------------------------------------------------------------

    def answers(self, request_id: str) -> list[dict[str, Any]] | None:
        """The logged answers (served and shadow) of ``request_id``; flushes the writer
        when none is found, so an answer given a moment ago is found too. ``None`` when
        the writer could not catch up (the database is down or slow)."""
        assert self.log is not None
        rows = _answers(self.log.engine, request_id)
        if not rows:  # it may be queued, or in the batch being written
            if not self.log.flush():
                return None
            rows = _answers(self.log.engine, request_id)
        return rows

    def store_feedback(
        self, request_id: str, category: str | None, clicked: str | None, answers: list[dict]
    ) -> None:
        """Write the feedback row (committed, durable, before the API answers 204), then
        score it into live accuracy."""
        assert self.log is not None
        with self.log.engine.begin() as connection:
            connection.execute(
                log_schema.feedback.insert(),
                {
                    "request_id": request_id,
                    "ts": time.time(),
                    "category": category,
                    "clicked_product_id": clicked,
                },
            )
        if category is not None:
            self.metrics.feedback.labels("category").inc()
            self._score(category, answers)
        if clicked is not None:
            self.metrics.feedback.labels("click").inc()

    def _score(self, category: str, answers: list[dict]) -> None:
        for answer in answers:
            if answer["endpoint"] == "predict" and answer["category"] is not None:
                self.live.add(
                    answer["model_version"],
                    answer["query_kind"] or "",
                    answer["category"] == category,
                )

    def _seed_live_accuracy(self) -> None:
        """Live accuracy survives a restart: replay the last feedback categories."""
        assert self.log is not None
        p, f = log_schema.predictions, log_schema.feedback
        recent = (
            sa.select(f.c.id, f.c.request_id, f.c.category)
            .where(f.c.category.is_not(None))
            .order_by(f.c.id.desc())
            .limit(20 * self.live.window)
            .subquery()
        )
        query = (
            sa.select(recent.c.category, p.c.model_version, p.c.query_kind, p.c.category.label("p"))
            .join(p, p.c.request_id == recent.c.request_id)
            .where(p.c.endpoint == "predict")
            .order_by(recent.c.id)
        )
        with self.log.engine.connect() as connection:
            for truth, version, kind, predicted in connection.execute(query):
                self.live.add(version, kind or "", predicted == truth)


def _answers(engine: sa.Engine, request_id: str) -> list[dict[str, Any]]:
    p = log_schema.predictions
    query = sa.select(p.c.endpoint, p.c.model_version, p.c.role, p.c.query_kind, p.c.category)
    with engine.connect() as connection:
        rows = connection.execute(query.where(p.c.request_id == request_id)).mappings()
        return [dict(r) for r in rows]


def _ranking_json(ranking: list[tuple[str, float]]) -> str:
    return top_k_json([[c, round(p, 6)] for c, p in ranking])


class StartTime:
    """ASGI middleware: the request's arrival time in its scope, for the log's latency
    (cheaper than a FastAPI dependency, which costs a parameter solve per request)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        scope[STARTED] = time.perf_counter()
        await self.app(scope, receive, send)


def log_predict(
    request: Request, market: Marketplace, listing: Listing, prediction: Prediction
) -> None:
    """Log the served answer of ``/predict`` and queue it for the shadow version."""
    watch: Watch = request.app.state.watch
    if watch.log is None and not watch.shadow:
        return
    ranking = prediction.ranking
    row = watch._row(request, "predict", market)
    row.update(_summary(listing.image, listing.text, listing.price))
    row["query_kind"] = _kind(listing)
    if watch.shadow:
        watch._shadow(_Shadowed(market, prediction, listing, dict(row)))
    if watch.log is not None:
        row["category"], row["probability"] = ranking[0]
        row["top_k"] = _ranking_json(ranking)
        row["image_vector"] = vector_bytes(prediction.image_vector)
        row["text_vector"] = vector_bytes(prediction.text_vector)
        watch.log.record(row)


def log_similar(
    request: Request,
    market: Marketplace,
    answer: SimilarAnswer,
    image: bytes | None,
    text: str | None,
    price: float | None,
) -> None:
    """Log the answer of ``/similar``."""
    watch: Watch = request.app.state.watch
    if watch.log is None:
        return
    row = watch._row(request, "similar", market)
    row.update(_summary(image, text, price))
    row.update(_results(answer.results))
    row["query_kind"] = answer.kind
    row["image_vector"] = vector_bytes(answer.image_vector)
    row["text_vector"] = vector_bytes(answer.text_vector)
    watch.log.record(row)


def log_product_similar(
    request: Request, market: Marketplace, results: list[dict[str, Any]]
) -> None:
    """Log the answer of ``/products/{id}/similar`` (query kind ``product``): a tuple of
    the raw facts, made into the row by the writer thread (the hot path's whole cost)."""
    watch: Watch = request.app.state.watch
    if watch.log is None:
        return
    info = market.info
    started = request.scope.get(STARTED)
    top = results[0] if results else None
    watch.log.record_answer(
        correlation_id.get() or "",
        time.time(),
        "product_similar",
        info.name,
        info.version,
        watch.client_key(request),
        None if started is None else 1000 * (time.perf_counter() - started),
        "product",
        tuple([r["product_id"] for r in results]),  # atomic: the GC untracks it
        None if top is None else top["category"],
        None if top is None else top["score"],
    )


def _kind(listing: Listing) -> str:
    return query_kind(bool(listing.text), listing.image is not None)


def _summary(image: bytes | None, text: str | None, price: float | None) -> dict[str, Any]:
    return {
        "text_chars": len(text) if text else None,
        "image_bytes": None if image is None else len(image),
        "image_sha256": None if image is None else hashlib.sha256(image).hexdigest(),
        "price_present": price is not None,
    }


def _results(results: list[dict[str, Any]]) -> dict[str, Any]:
    top = results[0] if results else None
    return {
        "category": None if top is None else top["category"],
        "probability": None if top is None else top["score"],
        "top_k": top_k_json([r["product_id"] for r in results]),
    }
