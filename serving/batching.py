"""Dynamic batching of /predict: concurrent requests share one forward pass.

On two CPU cores a forward pass of four listings costs about three single ones (the
encoders' matrix products use the cores better), while running four single passes side by
side only oversubscribes them. So requests queue here and one worker takes them as one
batch: after the first request of a batch it waits up to ``max_wait_ms`` for more (up to
``max_size``). Without that window, clients fall into alternating batches of one and three
(the lone one starts before the others arrive); with a few milliseconds they stay in step
and each batch takes all of them. A lone request pays the window once.

A batch that fails (one corrupt photo raises for all) is retried one listing at a time,
so every request gets its own result or its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from marketplace.inference import Listing, Marketplace, Prediction

Ranking = list[tuple[str, float]]


@dataclass
class _Pending:
    market: Marketplace
    listing: Listing
    future: asyncio.Future[Prediction]


class PredictBatcher:
    """Queue of predictions, answered in batches by one worker task."""

    def __init__(
        self,
        max_size: int,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.max_size = max_size
        self._on_batch = on_batch  # told each forward pass's size (GET /metrics)
        self.max_wait_s = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # forward passes run, and listings answered: how well requests
        self.listings = 0  # coalesce (listings / batches is the mean batch size)

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="predict-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def predict(self, market: Marketplace, listing: Listing) -> Ranking:
        """The ranking of one listing, computed in whichever batch it joins."""
        return (await self.score(market, listing)).ranking

    async def score(self, market: Marketplace, listing: Listing) -> Prediction:
        """``predict``, with the listing's encoder output (for the prediction log)."""
        if self.max_size <= 1 or self._worker is None:
            if self._on_batch is not None:
                self._on_batch(1)
            return (await run_in_threadpool(market.predict_encoded_many, [listing]))[0]
        future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(market, listing, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(batch) < self.max_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            # A reload may swap the model between two requests: batch per model object.
            for market in {id(p.market): p.market for p in batch}.values():
                await self._answer(market, [p for p in batch if p.market is market])

    async def _answer(self, market: Marketplace, pending: list[_Pending]) -> None:
        self.batches += 1
        self.listings += len(pending)
        if self._on_batch is not None:
            self._on_batch(len(pending))
        try:
            results = await run_in_threadpool(
                market.predict_encoded_many, [p.listing for p in pending]
            )
        except Exception as exc:
            if len(pending) == 1:
                _settle(pending[0].future, exc)
            else:  # someone's bad input: answer each on its own
                for p in pending:
                    await self._answer(market, [p])
            return
        for p, ranking in zip(pending, results, strict=True):
            _settle(p.future, ranking)


def _settle(future: asyncio.Future[Prediction], outcome: Prediction | BaseException) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
