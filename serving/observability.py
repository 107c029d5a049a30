"""Operations: Prometheus metrics (``GET /metrics``), request ids in logs, registry probing.

HTTP metrics (requests by route and status, latency histograms) come from
``prometheus-fastapi-instrumentator``; the service's own (batch sizes, loaded version,
reloads, index size, registry reachability) are ``prometheus-client`` metrics in the same
per-app registry, so two apps in one process (tests) never share counters.

Every request gets an id (``asgi-correlation-id``): the client's ``X-Request-ID`` when it
sends a UUID, else a new one; the response echoes it and every log line written while
the request runs carries it.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.concurrency import run_in_threadpool

REQUEST_ID_HEADER = "X-Request-ID"


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's logging, with the request id (``-`` outside a request) on every line."""
    fmt = "%(asctime)s %(levelname)s [%(correlation_id)s] %(name)s: %(message)s"
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {
                "()": "asgi_correlation_id.CorrelationIdFilter",
                "uuid_length": 32,
                "default_value": "-",
            }
        },
        "formatters": {"plain": {"format": fmt}},
        "handlers": {"default": handler},
        "loggers": {
            name: {"handlers": ["default"], "level": level.upper(), "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "serving", "marketplace")
        },
    }


class ServiceMetrics:
    """The service's own metrics, beside the HTTP ones, in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.batch_size = Histogram(
            "marketplace_predict_batch_size",
            "Listings per forward pass of the /predict batcher",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=registry,
        )
        self.model = Gauge(
            "marketplace_model_info",
            "The model version being served (value 1)",
            ["name", "version", "alias"],
            registry=registry,
        )
        self.reloads = Counter(
            "marketplace_model_reloads",
            "Model loads by outcome (success, failure)",
            ["outcome"],
            registry=registry,
        )
        self.index_size = Gauge(
            "marketplace_index_size", "Products in the served FAISS index", registry=registry
        )
        self.registry_up = Gauge(
            "marketplace_registry_reachable",
            "1 when the last probe of the MLflow registry answered, 0 when it did not",
            registry=registry,
        )

    def loaded(self, name: str, version: str, alias: str | None, index_size: int) -> None:
        self.model.clear()
        self.model.labels(name, version, alias or "").set(1)
        self.index_size.set(index_size)
        self.reloads.labels("success").inc()

    def failed(self) -> None:
        self.reloads.labels("failure").inc()


def instrument(app: FastAPI) -> ServiceMetrics:
    """Add request ids and ``GET /metrics`` to ``app``; returns the service's metrics."""
    registry = CollectorRegistry()
    Instrumentator(
        should_group_status_codes=False,  # 413 and 415 are not the same problem
        excluded_handlers=["/metrics"],
        registry=registry,
    ).instrument(app).expose(
        app,
        include_in_schema=True,
        response_class=PlainTextResponse,
        tags=["operations"],
        summary="Prometheus metrics (text exposition format)",
    )
    app.add_middleware(CorrelationIdMiddleware, header_name=REQUEST_ID_HEADER)
    return ServiceMetrics(registry)


class RegistryProbe:
    """Is the tracking server there? One cheap request, cached for ``ttl_s``.

    The API keeps serving the model it loaded whatever the answer; the probe lets
    /health/ready say so and /admin/reload refuse (503) at once instead of retrying a
    dead server for minutes.
    """

    def __init__(
        self,
        uri: str | None,
        gauge: Gauge | None = None,
        timeout_s: float = 1.0,
        ttl_s: float = 2.0,
    ) -> None:
        self.uri = uri
        self.gauge = gauge
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._checked = -1e9
        self._problem: str | None = None
        self._lock = asyncio.Lock()

    async def problem(self) -> str | None:
        """``None`` when reachable (or not checkable), else why not."""
        if self.uri is None:
            return None
        async with self._lock:
            if time.monotonic() - self._checked > self.ttl_s:
                self._problem = await run_in_threadpool(self._probe)
                self._checked = time.monotonic()
                if self.gauge is not None:
                    self.gauge.set(0 if self._problem else 1)
        return self._problem

    def _probe(self) -> str | None:
        assert self.uri is not None
        if self.uri.startswith(("http://", "https://")):
            url = f"{self.uri.rstrip('/')}/health"
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                    response.read()
                return None
            except urllib.error.HTTPError as exc:
                return f"registry unreachable at {self.uri}: HTTP {exc.code} from /health"
            except (OSError, urllib.error.URLError) as exc:
                reason: Any = getattr(exc, "reason", exc)
                return f"registry unreachable at {self.uri}: {reason}"
        if self.uri.startswith("sqlite:///"):
            path = Path(self.uri.removeprefix("sqlite:///"))
            return None if path.exists() else f"registry database {path} does not exist"
        return None
