"""What a failure answers: the caller's input error is a 422, anything else a 500.

Routers raise ``marketplace.core.errors.InputError`` (or a subclass, e.g. ``ImageError``) for
input the service cannot answer, from the route or from library code it calls; the
handler here turns it into ``{"detail": message, "status": 422}``. Any other exception
is a bug or an outage, never the client's fault: a 500 whose body carries the request id
(``{"detail", "status", "request_id"}``, also the ``X-Request-ID`` header) so that the
client can quote it, with the traceback logged under that id, and counted by the HTTP
metrics as a 500. A ``ValueError`` from inside a model (a shape mismatch after a bad
reload, a NaN) is therefore a 500, not a 422.
"""

from __future__ import annotations

import logging

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Match

from marketplace.core.errors import InputError
from serving.observability import REQUEST_ID_HEADER

log = logging.getLogger("serving.errors")


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def allowed_methods(request: Request) -> str:
    """The ``Allow`` header of a 405: every method some route fully matches at this path.

    Starlette answers a 405 from the first route whose path matches, so with one route
    per method (``GET``, ``PUT`` and ``DELETE /products/{id}``) it would name that route's
    methods only, not the path's (RFC 9110 and the published schema list them all).
    Asking each route (``matches``, included routers too) about each method keeps to
    the routing's public interface."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


def install(app: FastAPI) -> None:
    """Add the two handlers to ``app`` (HTTPException and validation errors are app.py's)."""

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "status": 422}, status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = correlation_id.get() or "-"
        log.error(
            "500 for %s %s (request %s): %s: %s",
            request.method,
            request.url.path,
            request_id,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        return JSONResponse(
            {
                "detail": f"internal error; quote request id {request_id} when reporting it",
                "status": 500,
                "request_id": request_id,
            },
            status_code=500,
            headers={REQUEST_ID_HEADER: request_id},
        )
