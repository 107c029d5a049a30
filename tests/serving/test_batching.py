"""Dynamic batching of /predict: coalescing, per-request results and per-request errors."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from marketplace.data.images import ImageError
from marketplace.inference import Listing, Prediction
from serving.batching import PredictBatcher


class FakeMarket:
    """Ranks a listing by its text; ``bad`` text raises, as a corrupt photo would."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def predict_many(self, listings: list[Listing]) -> list[list[tuple[str, float]]]:
        with self.lock:
            self.calls.append(len(listings))
        time.sleep(self.delay)  # a forward pass
        if any(x.text == "bad" for x in listings):
            raise ImageError("corrupt", "cannot identify image file")
        return [[(str(x.text), 1.0)] for x in listings]

    def predict_encoded_many(self, listings: list[Listing]) -> list[Prediction]:
        return [Prediction(r, None) for r in self.predict_many(listings)]  # type: ignore[arg-type]


async def _predict_all(batcher: PredictBatcher, market: Any, texts: list[str]) -> list[Any]:
    batcher.start()
    try:
        calls = [batcher.predict(market, Listing(text=t)) for t in texts]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await batcher.stop()


def test_concurrent_requests_share_forward_passes() -> None:
    market = FakeMarket()
    texts = [f"t{i}" for i in range(10)]
    results = asyncio.run(_predict_all(PredictBatcher(4), market, texts))
    assert results == [[(t, 1.0)] for t in texts]  # each request gets its own answer
    assert sum(market.calls) == 10 and max(market.calls) == 4 and len(market.calls) <= 4


def test_the_wait_window_gathers_requests_that_arrive_close_together() -> None:
    market = FakeMarket(delay=0)

    async def run(wait_ms: float) -> None:
        batcher = PredictBatcher(8, max_wait_ms=wait_ms)
        batcher.start()

        async def staggered(i: int) -> object:
            await asyncio.sleep(0.005 * i)
            return await batcher.predict(market, Listing(text=str(i)))

        try:
            await asyncio.gather(*(staggered(i) for i in range(4)))
        finally:
            await batcher.stop()

    asyncio.run(run(100))
    assert market.calls == [4]  # one pass for all four
    market.calls.clear()
    asyncio.run(run(0))
    assert market.calls == [1, 1, 1, 1]  # no window: each ran as it came


def test_a_bad_listing_fails_alone() -> None:
    market = FakeMarket()
    results = asyncio.run(_predict_all(PredictBatcher(8), market, ["a", "bad", "c"]))
    assert results[0] == [("a", 1.0)] and results[2] == [("c", 1.0)]
    assert isinstance(results[1], ImageError)


def test_batch_size_one_runs_each_request_alone() -> None:
    market = FakeMarket(delay=0)
    results = asyncio.run(_predict_all(PredictBatcher(1), market, ["a", "b", "c"]))
    assert results == [[("a", 1.0)], [("b", 1.0)], [("c", 1.0)]]
    assert market.calls == [1, 1, 1]


def test_requests_for_two_models_are_not_mixed() -> None:
    old, new = FakeMarket(), FakeMarket()

    async def run() -> list[Any]:
        batcher = PredictBatcher(8)
        batcher.start()
        try:
            return await asyncio.gather(
                batcher.predict(old, Listing(text="a")),
                batcher.predict(new, Listing(text="b")),
                batcher.predict(old, Listing(text="c")),
            )
        finally:
            await batcher.stop()

    assert asyncio.run(run()) == [[("a", 1.0)], [("b", 1.0)], [("c", 1.0)]]
    assert sum(old.calls) == 2 and sum(new.calls) == 1


@pytest.mark.parametrize("size", [1, 8])
def test_predict_through_the_api_matches_the_model(registry: Any, size: int) -> None:
    """Concurrent /predict calls give what the model gives each listing alone."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests.helpers.tiny import serving_settings

    texts = ["oak dining table", "mountain bike", "iphone charger", "garden shed", "sofa"] * 2
    settings = serving_settings(registry, predict_batch_size=size)
    with TestClient(create_app(settings)) as client:
        market = client.app.state.holder.current  # type: ignore[attr-defined]
        expected = [market.predict(text=t)[0] for t in texts]
        with ThreadPoolExecutor(len(texts)) as pool:
            responses = list(pool.map(lambda t: client.post("/predict", data={"text": t}), texts))
        batcher = client.app.state.batcher  # type: ignore[attr-defined]
    for response, (category, probability) in zip(responses, expected, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["category"] == category
        assert body["confidence"] == pytest.approx(probability, abs=1e-5)
    if size == 1:
        assert batcher.batches == 0  # not used: each request ran alone
    else:
        assert batcher.listings == len(texts)
