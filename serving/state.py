"""The model the API serves, swapped atomically on reload.

Handlers read ``holder.current`` once per request and use that object throughout, so a
request started before a reload finishes on the old model and one started after uses the
new one; nobody sees half of each. Loading happens beside serving (in a worker thread) and
the reference is replaced only after the new model loaded completely: a failed load leaves
the old model in place and records why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from marketplace.inference import Marketplace

if TYPE_CHECKING:
    from serving.observability import RegistryProbe, ServiceMetrics

log = logging.getLogger("serving")


@dataclass(frozen=True)
class ReloadOutcome:
    reloaded: bool
    version: str | None
    previous_version: str | None
    detail: str


class ModelHolder:
    """Holds the current ``Marketplace``; ``reload`` loads a new one and swaps it in."""

    def __init__(
        self, loader: Callable[[], Marketplace], metrics: ServiceMetrics | None = None
    ) -> None:
        self._loader = loader
        self._metrics = metrics
        self._current: Marketplace | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None
        self.last_attempt: float | None = None

    @property
    def current(self) -> Marketplace | None:
        return self._current

    @property
    def version(self) -> str | None:
        return None if self._current is None else self._current.info.version

    async def reload(self) -> ReloadOutcome:
        """Load what the loader points to now; keep the old model if that fails."""
        async with self._lock:  # one load at a time; concurrent callers wait for it
            previous = self.version
            self.last_attempt = time.time()
            try:
                new = await run_in_threadpool(self._loader)
            except Exception as exc:  # any failure: keep serving, say why
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("model load failed, still serving %s: %s", previous, self.last_error)
                if self._metrics is not None:
                    self._metrics.failed()
                return ReloadOutcome(False, previous, previous, self.last_error)
            self._current = new  # the atomic swap
            self.last_error = None
            if self._metrics is not None:
                info = new.info
                self._metrics.loaded(info.name, info.version, info.alias, info.index_size)
            log.info(
                "serving %s version %s (was %s), loaded in %.2f s",
                new.info.name,
                new.info.version,
                previous,
                new.info.load_seconds,
            )
            return ReloadOutcome(True, new.info.version, previous, "loaded")


async def poll_alias(
    holder: ModelHolder,
    resolve: Callable[[], str],
    interval_s: float,
    probe: RegistryProbe | None = None,
) -> None:
    """Every ``interval_s``, reload when the alias points to another version."""
    while True:
        await asyncio.sleep(interval_s)
        if probe is not None and (problem := await probe.problem()):
            # The client would retry a dead server for minutes; ask again next time.
            log.warning("not polling the alias: %s", problem)
            continue
        try:
            target = await run_in_threadpool(resolve)
        except Exception as exc:  # the registry is down: keep serving, try again later
            log.warning("could not resolve the alias: %s", exc)
            continue
        if target != holder.version:
            log.info("alias moved to version %s; reloading", target)
            await holder.reload()
