"""Live listings over real uvicorn servers and a real catalogue log (a SQLite file).

PUT then similar finds it, DELETE then never (not even from the precomputed lists), two
processes on one log converge, a new model version re-embeds the live listings, and a
``kill -9`` under 16 writing clients loses no acknowledged change and stores no refused one.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from tests.helpers import api_process
from tests.helpers.tiny import Registry, photo

pytestmark = [pytest.mark.slow, pytest.mark.server]

TOKEN = "catalogue-test-token"
ADMIN = "catalogue-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALIAS = "catalogue-test"  # this module's own alias: moving it disturbs no other test


@contextlib.contextmanager
def api(registry: Registry, log_url: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m serving`` on a free port over ``registry`` and the log at ``log_url``;
    yields its URL and process, and stops it by PID (if the test has not killed it)."""
    settings = {
        "MARKETPLACE_MODEL_NAME": registry.name,
        "MARKETPLACE_CATALOGUE_URL": log_url,
        "MARKETPLACE_CATALOGUE_POLL_S": "0.2",
        **env,
    }
    with api_process(registry.uri, settings) as (base, process):
        yield base, process


def put(base: str, product_id: str, token: str | None = TOKEN, **fields) -> httpx.Response:
    image = fields.pop("image", None)
    files = {"image": ("photo.jpg", image, "image/jpeg")} if image is not None else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.put(
        f"{base}/products/{product_id}", data=fields, files=files, headers=headers, timeout=30
    )


def similar_ids(base: str, text: str, k: int = 50) -> list[str]:
    answer = httpx.post(f"{base}/similar", data={"text": text, "k": str(k)}, timeout=30)
    assert answer.status_code == 200, answer.text
    return [r["product_id"] for r in answer.json()["results"]]


def more_like(base: str, product_id: str, k: int = 10, **params) -> httpx.Response:
    return httpx.get(f"{base}/products/{product_id}/similar", params={"k": k, **params}, timeout=30)


def eventually(check: Callable[[], bool], within: float) -> float:
    """Seconds until ``check()`` holds; fails after ``within``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not within {within} s"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def aliased(registry: Registry) -> Iterator[Registry]:
    client = MlflowClient(registry.uri)
    client.set_registered_model_alias(registry.name, ALIAS, "1")
    yield registry
    client.delete_registered_model_alias(registry.name, ALIAS)


@pytest.fixture(scope="module")
def replicas(aliased: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """Two API processes on one catalogue log: A takes writes, B has no catalogue token."""
    url = f"sqlite:///{tmp_path_factory.mktemp('catalogue') / 'catalogue.db'}"
    common = {"MARKETPLACE_MODEL_ALIAS": ALIAS}
    with (
        api(
            aliased, url, **common, MARKETPLACE_CATALOGUE_TOKEN=TOKEN, MARKETPLACE_ADMIN_TOKEN=ADMIN
        ) as (a, _),
        api(aliased, url, **common) as (b, _),
    ):
        yield a, b


def test_put_is_found_and_delete_is_never_found(replicas: tuple, registry: Registry) -> None:
    a, _ = replicas
    title, description = "vintage red bicycle tandem", "two seats, new tyres, Leeds"
    assert put(a, "live-1", token=None, title=title).status_code == 401
    assert put(a, "live-1", token="wrong", title=title).status_code == 401
    # Refused changes store nothing: a photo that is no image, an unknown category, no title.
    bad = put(a, "live-1", title=title, image=b"GIF89a not a photo")
    assert bad.status_code == 415, bad.text
    assert put(a, "live-1", title=title, category="Spaceships").status_code == 422
    assert put(a, "live-1", description=description).status_code == 422
    assert put(a, "live-1", title=title, price="-3").status_code == 422
    assert put(a, "bad id!", title=title).status_code == 422
    assert httpx.get(f"{a}/products/live-1", timeout=10).status_code == 404

    created = put(a, "live-1", title=title, description=description, price="120",
                  location="Leeds", image=photo(4242))  # fmt: skip
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["category_source"] == "model" and body["category"] == body["predicted_category"]
    assert body["live"] and body["image_id"] == "live-1" and body["model"]["version"] == "1"
    record = httpx.get(f"{a}/products/live-1", timeout=10).json()
    assert (record["title"], record["price"], record["live"]) == (title, 120.0, True)

    # Its own text finds it first (cosine 1 with its stored text half), and "more like
    # this" answers for it and from the built listings.
    assert similar_ids(a, f"{title}. {description}")[0] == "live-1"
    mine = more_like(a, "live-1", k=5)
    assert mine.status_code == 200 and len(mine.json()["results"]) == 5
    assert "live-1" not in [r["product_id"] for r in mine.json()["results"]]
    neighbours = [
        [r["product_id"] for r in more_like(a, pid, k=40).json()["results"]]
        for pid in registry.listings["product_id"]
    ]
    assert any("live-1" in found for found in neighbours)  # merged into built lists
    assert httpx.get(f"{a}/products/live-1/image", timeout=10).status_code == 200

    changed = put(a, "live-1", title="red tandem bicycle", category="Home & Garden")
    assert changed.status_code == 200, changed.text
    assert changed.json()["category"] == "Home & Garden"
    assert changed.json()["category_source"] == "seller" and changed.json()["image_id"] is None
    filtered = more_like(a, registry.product_with_photo, k=20, category="Home & Garden")
    assert "live-1" in [r["product_id"] for r in filtered.json()["results"]]

    # A built listing deleted: gone from search, from every precomputed list, and its page.
    built = registry.product_with_photo
    built_text = registry.listings.set_index("product_id").loc[built, "title"]
    assert built in similar_ids(a, built_text)
    assert httpx.delete(f"{a}/products/{built}", headers=AUTH, timeout=10).status_code == 204
    assert built not in similar_ids(a, built_text)
    for pid in registry.listings["product_id"]:
        if pid != built:
            found = more_like(a, pid, k=40).json()["results"]
            assert built not in [r["product_id"] for r in found]
            assert len(found) == 38  # the 37 other built ones left + the live one
    assert more_like(a, built).status_code == 404
    assert httpx.get(f"{a}/products/{built}", timeout=10).status_code == 404
    assert httpx.get(f"{a}/products/{built}/image", timeout=10).status_code == 404

    assert httpx.delete(f"{a}/products/live-1", headers=AUTH, timeout=10).status_code == 204
    assert "live-1" not in similar_ids(a, "red tandem bicycle")
    assert httpx.delete(f"{a}/products/live-1", headers=AUTH, timeout=10).status_code == 404
    assert httpx.delete(f"{a}/products/nobody", headers=AUTH, timeout=10).status_code == 404
    # Put again after a delete: a new listing (201), and the built one comes back too.
    assert put(a, built, title=built_text).status_code == 201
    assert built in similar_ids(a, built_text)


def test_two_replicas_converge_within_two_seconds(replicas: tuple) -> None:
    a, b = replicas
    assert put(b, "rep-1", title="anything").status_code == 403  # B has no catalogue token
    assert put(a, "rep-1", title="brass telescope on a tripod").status_code == 201
    seen = eventually(lambda: httpx.get(f"{b}/products/rep-1").status_code == 200, 2.0)
    assert "rep-1" in similar_ids(b, "brass telescope on a tripod")
    assert httpx.delete(f"{a}/products/rep-1", headers=AUTH).status_code == 204
    gone = eventually(lambda: "rep-1" not in similar_ids(b, "brass telescope on a tripod"), 2.0)
    print(f"replica B saw the put after {seen:.2f} s and the delete after {gone:.2f} s")


def test_a_new_model_version_re_embeds_live_listings(replicas: tuple, aliased: Registry) -> None:
    a, _ = replicas
    text = "antique oak writing bureau"
    assert put(a, "ver-1", title=text, image=photo(777)).status_code == 201
    first = httpx.post(f"{a}/similar", data={"text": text, "k": "3"}).json()
    assert first["results"][0]["product_id"] == "ver-1" and first["model"]["version"] == "1"
    MlflowClient(aliased.uri).set_registered_model_alias(aliased.name, ALIAS, "2")
    try:
        reload = httpx.post(
            f"{a}/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120
        )
        assert reload.status_code == 200 and reload.json()["version"] == "2", reload.text
        second = httpx.post(f"{a}/similar", data={"text": text, "k": "3"}).json()
        assert second["model"]["version"] == "2"
        # Found first with cosine 1: its vector was made by version 2's own heads.
        top = second["results"][0]
        assert top["product_id"] == "ver-1" and top["score"] == pytest.approx(1.0, abs=1e-4)
        assert httpx.get(f"{a}/products/ver-1/image").status_code == 200
    finally:
        MlflowClient(aliased.uri).set_registered_model_alias(aliased.name, ALIAS, "1")


def test_kill_9_under_16_writers_loses_no_acknowledged_change(
    registry: Registry, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    env = {"MARKETPLACE_CATALOGUE_TOKEN": TOKEN}
    # product id -> [(op, title, outcome)]: outcome "ack", or "unknown" when in flight
    history: dict[str, list[tuple[str, str | None, str]]] = {}
    refused: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    acknowledged = [0]
    errors: list[Exception] = []

    def client(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(headers=AUTH, timeout=30) as http:
            step = 0
            while not stop.is_set():
                step += 1
                pid = f"c{n}-{rng.randrange(4)}"
                ops = history.setdefault(pid, [])
                live = bool(ops) and ops[-1][0] == "put"
                try:
                    if rng.random() < 0.1:
                        rid = f"r{n}-{step}"
                        with lock:
                            refused.append(rid)
                        answer = http.put(
                            f"{base}/products/{rid}",
                            data={"title": "refused"},
                            files={"image": ("x.jpg", b"not a photo", "image/jpeg")},
                        )
                        assert answer.status_code == 415, answer.text
                    elif live and rng.random() < 0.35:
                        ops.append(("delete", None, "unknown"))
                        answer = http.delete(f"{base}/products/{pid}")
                        assert answer.status_code == 204, answer.text
                        ops[-1] = ("delete", None, "ack")
                    else:
                        title = f"listing {pid} version {step}"
                        ops.append(("put", title, "unknown"))
                        answer = http.put(f"{base}/products/{pid}", data={"title": title})
                        assert answer.status_code in (200, 201), answer.text
                        ops[-1] = ("put", title, "ack")
                    with lock:
                        acknowledged[0] += 1
                except httpx.TransportError:
                    return  # the server is gone; the op in flight stays "unknown"
                except Exception as exc:
                    errors.append(exc)
                    return

    with api(registry, url, **env) as (base, server):
        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        eventually(lambda: acknowledged[0] >= 150, 60)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors, errors
    with api(registry, url, **env) as (base, _):
        checked = 0
        for pid, ops in history.items():
            got = httpx.get(f"{base}/products/{pid}", timeout=10)
            title = got.json()["title"] if got.status_code == 200 else None
            acked = [op for op in ops if op[2] == "ack"]
            # The last acknowledged state, or the op in flight when the server died.
            allowed = {acked[-1][1] if acked else None}
            if ops and ops[-1][2] == "unknown":
                allowed.add(ops[-1][1])
            assert title in allowed, (pid, title, ops[-3:])
            checked += len(acked)
        for rid in refused:
            assert httpx.get(f"{base}/products/{rid}", timeout=10).status_code == 404
        live_titles = similar_ids(base, "listing version", k=100)
        deleted = [p for p, ops in history.items() if ops and ops[-1] == ("delete", None, "ack")]
        assert not set(deleted) & set(live_titles)
    assert checked >= 100  # acknowledged puts and deletes (the refused ones counted apart)
    print(f"{checked} acknowledged changes checked after kill -9, {len(refused)} refused")


def test_live_neighbour_lists_answer_as_the_scan(registry: Registry) -> None:
    """More like this of a built product, from its live neighbour list (and the scanned
    tail of rows applied since), gives the ids and scores of a scan of every live vector,
    over random puts, re-puts, deletes and hidden built products (in process, no HTTP)."""
    from dataclasses import replace

    import numpy as np

    from marketplace.inference import Filters, Marketplace
    from marketplace.search.catalogue import DELETE, PUT, Change
    from marketplace.search.live import LiveCatalogue

    market = Marketplace.from_registry(registry.name, "production")
    live = LiveCatalogue(market)
    index = live.index
    assert live.depth > 0
    rng = random.Random(7)
    gen = np.random.default_rng(7)
    built_ids = [str(index.products["product_id"][i]) for i in range(len(index))]
    live_ids: list[str] = []
    seq = 0

    def change(product_id: str, op: str) -> tuple[Change, np.ndarray | None]:
        nonlocal seq
        seq += 1
        if op != PUT:
            return Change(seq, product_id, op, time.time()), None
        vector = gen.standard_normal(index.meta.dim).astype(np.float32)
        has_image = rng.random() < 0.7
        if not has_image:
            vector[index.half :] = 0.0
        vector /= np.linalg.norm(vector)
        fields = {"title": f"t{seq}", "price": 10.0, "category": "Appliances"}
        return Change(seq, product_id, op, time.time(), **fields,
                      image_sha256="x" if has_image else None), vector  # fmt: skip

    compared = listed = 0
    for round_ in range(8):
        latest, vectors = {}, {}
        for _ in range(rng.choice([1, 5, 60])):
            roll = rng.random()
            if roll < 0.6 or not live_ids:
                product_id = f"live-{seq}"
                live_ids.append(product_id)
            elif roll < 0.8:
                product_id = rng.choice(live_ids)  # a re-put: its old row is removed
            elif roll < 0.9:
                product_id = rng.choice(built_ids)  # a built product, hidden from now on
            else:
                product_id = rng.choice(live_ids)
            op = DELETE if roll >= 0.9 else PUT
            c, vector = change(product_id, op)
            latest[product_id] = c
            if vector is not None:
                vectors[c.seq] = vector
        live._apply(latest, vectors)
        if round_ % 3 != 2:  # otherwise the new rows stay in the scanned tail
            live.refresh_lists()
        state = live._state
        scan = replace(state, live_hits=None)
        for product_id in rng.sample(built_ids, 20):
            if not live.exists(product_id) or live.entry(product_id) is not None:
                continue
            for k in (1, 10, live.depth):
                live._state = state
                got = live.similar_to_product(product_id, k, Filters())
                live._state = scan
                expected = live.similar_to_product(product_id, k, Filters())
                assert [r["score"] for r in got] == pytest.approx(
                    [r["score"] for r in expected], abs=2e-6
                )
                assert [r["product_id"] for r in got] == [r["product_id"] for r in expected]
                compared += 1
                position = index.position(product_id)
                query = index.product_query(position)
                listed += live._live_neighbours(state, position, query, k) is not None
        live._state = state
    assert compared > 100 and state.n_rows > live.depth  # lists were cut and refilled
    assert listed > 0.8 * compared  # the lists answered (not the scan they fall back to)
