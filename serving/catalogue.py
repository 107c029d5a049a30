"""The catalogue log in the API: replay at every load, follow it, authorise writes.

Every model the holder loads gets the log replayed onto its index before it is swapped
in (``loader``), so a reload or a new version serves the live listings from its first
request. ``follow`` then applies what other API processes acknowledge (rows with a higher
``seq``) every ``catalogue_poll_s``; a process applies its own writes at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Annotated

import numpy as np
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from marketplace.inference import Marketplace
from marketplace.search.catalogue import CatalogueLog, Written
from marketplace.search.live import LiveCatalogue, attach
from marketplace.search.thumbnails import make_thumbnail
from serving.settings import Settings
from serving.state import ModelHolder

log = logging.getLogger("serving")
_bearer = HTTPBearer(auto_error=False)


def loader(load: Callable[[], Marketplace], catalogue: CatalogueLog) -> Callable[[], Marketplace]:
    """``load``, then the log replayed onto the model's index (in the loading thread,
    before the swap); a model that cannot hold live listings serves without them."""

    def load_with_live() -> Marketplace:
        market = load()
        if market.classifier.package.kind != "combined":
            log.warning("%s is not a combined model: no live listings", market.info.name)
            return market
        # The live neighbour lists: built by ``follow``'s first sync (queries scan until
        # then), so a replay of 10,000 listings does not hold the model back by seconds.
        return attach(market, catalogue, lists=False)

    return load_with_live


async def follow(holder: ModelHolder, catalogue: CatalogueLog, interval_s: float) -> None:
    """Apply the log's new rows to the served model every ``interval_s``."""
    while True:
        await asyncio.sleep(interval_s)
        market = holder.current
        if market is None or market.live is None:
            continue
        try:
            await run_in_threadpool(market.live.sync, catalogue)
        except Exception as exc:  # the database is away: keep serving, try again
            log.warning("could not follow the catalogue log: %s: %s", type(exc).__name__, exc)


async def apply_own(
    request: Request, market: Marketplace, known: dict[int, np.ndarray] | None = None
) -> None:
    """After a write is committed: bring the request's model and the one served now (a
    reload may have swapped it meanwhile) up to the log, so the next request sees it. A
    failure here loses nothing (the row is committed; ``follow`` applies it later)."""
    catalogue: CatalogueLog = request.app.state.catalogue
    current = request.app.state.holder.current
    for target in {id(m): m for m in (market, current) if m is not None}.values():
        if target.live is None:
            continue
        try:
            # The live neighbour lists wait for ``follow`` (a matrix product over the
            # built catalogue): the new row is served from the scanned tail meanwhile.
            await run_in_threadpool(
                partial(target.live.sync, lists=False),
                catalogue,
                known if target is market else None,
            )
        except Exception as exc:
            log.warning("committed, but not applied yet: %s: %s", type(exc).__name__, exc)


async def commit_and_apply(
    request: Request,
    market: Marketplace,
    commit: Callable[[], Written],
    stored: np.ndarray | None = None,
) -> Written:
    """``commit()`` (the durable write), then the change applied to the request's model,
    in one worker-thread hop (a hop costs a PUT ~0.2 ms; the write and the apply were
    two); the model served now, if a reload swapped it meanwhile, follows (``apply_own``).
    A failed apply loses nothing: the row is committed and ``follow`` applies it."""
    catalogue: CatalogueLog = request.app.state.catalogue

    def work() -> Written:
        written = commit()
        if market.live is not None:
            known = None if stored is None else {written.seq: stored}
            try:
                market.live.sync(catalogue, known, lists=False)
            except Exception as exc:
                log.warning("committed, but not applied yet: %s: %s", type(exc).__name__, exc)
        return written

    written = await run_in_threadpool(work)
    current = request.app.state.holder.current
    if current is not None and current is not market:
        await apply_own(request, current)
    return written


async def get_catalogue(request: Request) -> CatalogueLog:
    return request.app.state.catalogue


async def get_live(request: Request) -> LiveCatalogue:
    """The served model's live catalogue; 503 before a model is loaded."""
    market = request.app.state.holder.current
    if market is None or market.live is None:
        raise HTTPException(503, "no model with live listings is loaded yet")
    return market.live


async def require_catalogue_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Bearer-token check for listing writes; disabled (403) when no token is configured."""
    settings: Settings = request.app.state.settings
    if settings.catalogue_token is None:
        raise HTTPException(403, "listing changes are disabled: set MARKETPLACE_CATALOGUE_TOKEN")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    expected = settings.catalogue_token.get_secret_value().encode()
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


class LiveThumbnails:
    """Thumbnails of live listings' photos, made from the log's photo on first request
    (as the index stage makes them) and kept for the most recent ``size`` photos."""

    def __init__(self, size: int = 512) -> None:
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._size = size

    def get(self, catalogue: CatalogueLog, market: Marketplace, seq: int, sha: str) -> bytes:
        if (data := self._cache.get(sha)) is not None:
            self._cache.move_to_end(sha)
            return data
        photo = catalogue.images([seq])[seq]
        made = market.thumbnails
        size, quality, kind = (
            (made.size, made.quality, made.image_format) if made else (160, 60, "webp")
        )
        data = make_thumbnail(photo, size, quality, kind)
        self._cache[sha] = data
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return data


CatalogueDep = Annotated[CatalogueLog, Depends(get_catalogue)]
LiveDep = Annotated[LiveCatalogue, Depends(get_live)]
