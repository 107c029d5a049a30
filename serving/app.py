"""The FastAPI application: ``uvicorn serving.app:create_app --factory``.

Nothing happens at import. ``create_app`` wires settings and routers; the lifespan points
MLflow at the registry, loads ``models:/<model_name>@<alias>`` and its index, and starts
the optional alias polling. Until the first load succeeds, /health/ready answers 503 and
model endpoints 503; /health/live is always 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from marketplace.core.db import default_url
from marketplace.inference import Marketplace
from marketplace.search.catalogue import CatalogueLog
from serving import catalogue as live_catalogue
from serving.batching import PredictBatcher
from serving.contract import publish
from serving.errors import allowed_methods
from serving.errors import install as install_error_handlers
from serving.observability import RegistryProbe, instrument
from serving.routers import (
    admin,
    feedback,
    health,
    images,
    model,
    page,
    predict,
    products,
    similar,
)
from serving.settings import Settings
from serving.state import ModelHolder, poll_alias
from serving.watch import StartTime, Watch

log = logging.getLogger("serving")


def registry_loader(
    settings: Settings, alias: str | None = None
) -> tuple[Callable[[], Marketplace], Callable[[], str]]:
    """Functions that load the aliased model (``alias``, else the served one), and resolve
    the alias to a version."""
    alias = alias or settings.model_alias

    def load() -> Marketplace:
        return Marketplace.from_registry(settings.model_name, alias)

    def resolve() -> str:
        from mlflow import MlflowClient

        version = MlflowClient().get_model_version_by_alias(settings.model_name, alias)
        return str(version.version)

    return load, resolve


def _configure(settings: Settings) -> str:
    """Process-wide set-up, done in the lifespan (never at import); returns the registry."""
    import faiss
    import mlflow
    import torch

    from marketplace.mlops.tracking import tracking_uri

    uri = settings.tracking_uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    faiss.omp_set_num_threads(settings.faiss_threads)
    # OpenBLAS (numpy's, FAISS's) on one thread: a request's matrix-vector product (live
    # listings) is far cheaper than waking a thread team, which under load cost 17x more.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits={"openblas": 1})
    log.info("registry: %s, model: %s@%s", uri, settings.model_name, settings.model_alias)
    return uri


def create_app(
    settings: Settings | None = None,
    *,
    loader: Callable[[], Marketplace] | None = None,
    resolver: Callable[[], str] | None = None,
) -> FastAPI:
    """Build the app; ``loader``/``resolver`` replace the registry (tests inject them)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        uri = _configure(settings) if loader is None else None
        probe = RegistryProbe(uri, metrics.registry_up)
        app.state.registry_probe = probe
        load, resolve = registry_loader(settings)
        # The catalogue log: replayed onto every model loaded, then followed.
        catalogue = await asyncio.to_thread(
            CatalogueLog, settings.catalogue_url or default_url("catalogue")
        )
        app.state.catalogue = catalogue
        holder = ModelHolder(live_catalogue.loader(loader or load, catalogue), metrics)
        app.state.holder = holder
        app.state.batcher = PredictBatcher(
            settings.predict_batch_size,
            settings.predict_batch_wait_ms,
            on_batch=metrics.batch_size.observe,
        )
        app.state.batcher.start()
        await holder.reload()
        # The prediction log and the shadow/canary version (serving/watch.py).
        watch = app.state.watch
        # The second version serves canary clients: it carries the live listings too.
        await watch.start(
            lambda alias: live_catalogue.loader(registry_loader(settings, alias)[0], catalogue)
        )
        pollers = []
        if settings.poll_interval_s > 0:
            pollers.append(
                asyncio.create_task(
                    poll_alias(holder, resolver or resolve, settings.poll_interval_s, probe)
                )
            )
            if watch.second is not None and loader is None:
                second = registry_loader(settings, watch.second_alias)[1]
                pollers.append(
                    asyncio.create_task(
                        poll_alias(watch.second, second, settings.poll_interval_s, probe)
                    )
                )
        # Every model that answers (production; the canary/shadow version) follows the log.
        followers = [
            asyncio.create_task(live_catalogue.follow(h, catalogue, settings.catalogue_poll_s))
            for h in (holder, watch.second)
            if h is not None
        ]
        try:
            yield
        finally:
            for follower in followers:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            catalogue.dispose()
            await app.state.batcher.stop()
            for poller in pollers:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            await watch.stop()  # after the last answer: every logged row written

    app = FastAPI(
        title="marketplace",
        summary="Category prediction and similar products from the registry's production model",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    publish(app, settings)  # the OpenAPI schema with the real errors (serving/contract.py)
    metrics = instrument(app)  # GET /metrics and X-Request-ID (serving/observability.py)
    app.state.metrics = metrics
    app.state.watch = Watch(settings, metrics.registry)
    app.add_middleware(StartTime)  # arrival time, for the prediction log's latency
    for router in (health.router, model.router, predict.router, similar.router, admin.router):
        app.include_router(router)
    app.include_router(feedback.router)
    # The search page and listing photos (serving/routers/page.py, images.py).
    app.include_router(images.router)
    app.include_router(products.router)  # live listings (serving/routers/products.py)
    app.state.live_thumbnails = live_catalogue.LiveThumbnails()
    app.include_router(page.router)
    app.mount("/static", page.assets(), name="static")

    install_error_handlers(app)  # InputError -> 422, any other exception -> 500 (request id)

    # Starlette's own 404/405 too (its base class): one error body for every answer.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:  # every method of the path, not just one route's
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return JSONResponse(
            {"detail": exc.detail, "status": exc.status_code},
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"][1:])
            message = error["msg"].removeprefix("Value error, ")
            # The form's own messages name their field ("k must be an integer, ...").
            if not key:
                key = "" if error["type"] == "value_error" else str(error["loc"][0])
            if key and not message.startswith(key.split(".")[-1]):
                message = f"{key}: {message}"
            problems.append(message)
        return JSONResponse({"detail": "; ".join(problems), "status": 422}, status_code=422)

    return app
