"""Live listings on the team stack: the catalogue log in the stack's PostgreSQL.

Two API processes on the stack (the registry through the tracking server, the log in
PostgreSQL, as ``python -m ops.stack env`` gives them): a listing put on one is found by
the other within 2 s, a delete hides it on both, and a restarted process replays the log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg2
import pytest

from tests.helpers import running_api
from tests.helpers.stack import Remote
from tests.helpers.tiny import photo

pytestmark = [pytest.mark.slow, pytest.mark.stack]

TOKEN = "stack-catalogue-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _found(base: str, text: str) -> list[str]:
    answer = httpx.post(f"{base}/similar", data={"text": text, "k": "50"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return [r["product_id"] for r in answer.json()["results"]]


def _within(check, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.05)


@pytest.fixture
def stack_catalogue(remote: Remote) -> Iterator[Remote]:
    """The stack's catalogue log, emptied afterwards: later tests on the same stack see the
    registry's catalogue as it was built (a deleted built listing would stay hidden)."""
    yield remote
    dsn = remote.stack.marketplace_db_uri.replace("+psycopg2", "")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("DELETE FROM catalogue_changes")
        cursor.execute("DELETE FROM catalogue_vectors")


def test_live_listings_in_the_stack_postgres(stack_catalogue: Remote) -> None:
    remote = stack_catalogue
    env = {
        "MARKETPLACE_MODEL_NAME": remote.name,
        "MARKETPLACE_CATALOGUE_URL": remote.stack.serving_env()["MARKETPLACE_CATALOGUE_URL"],
        "MARKETPLACE_CATALOGUE_TOKEN": TOKEN,
        "MARKETPLACE_CATALOGUE_POLL_S": "0.2",
    }
    text = "green canvas camping tent for four"
    with (
        running_api(remote.stack.tracking_uri, env=env) as a,
        running_api(remote.stack.tracking_uri, env=env) as b,
    ):
        put = httpx.put(
            f"{a}/products/stack-1",
            data={"title": text, "price": "45"},
            files={"image": ("tent.jpg", photo(99), "image/jpeg")},
            headers=AUTH,
            timeout=60,
        )
        assert put.status_code == 201, put.text
        assert _found(a, text)[0] == "stack-1"
        _within(lambda: "stack-1" in _found(b, text), 2.0)
        built = str(remote.listings["product_id"].iloc[0])
        assert httpx.delete(f"{b}/products/{built}", headers=AUTH).status_code == 204
        _within(lambda: httpx.get(f"{a}/products/{built}").status_code == 404, 2.0)
    dsn = remote.stack.marketplace_db_uri.replace("+psycopg2", "")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT product_id, op FROM catalogue_changes ORDER BY seq")
        assert cursor.fetchall()[-2:] == [("stack-1", "put"), (built, "delete")]
    with running_api(remote.stack.tracking_uri, env=env) as again:  # replayed at start
        assert httpx.get(f"{again}/products/stack-1").json()["price"] == 45.0
        assert httpx.get(f"{again}/products/{built}").status_code == 404
        assert built not in _found(again, str(remote.listings["title"].iloc[0]))
