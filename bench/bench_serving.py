"""Benchmark the API on the real catalogue: latency, throughput, cold start, reload safety.

Needs a project whose registry holds the real-data combined model with its index and a
``production`` alias (``--project``; build one with ``--build``, which copies this project,
imports ``../shared/data/marketplace`` and runs ``dvc repro`` + ``marketplace.mlops.promotion``).

1. Cold start from the registry: ``Marketplace.from_registry`` in a fresh process (import
   + download + load), and process start to ``/health/ready`` for ``python -m serving``.
2. ``GET /products/{id}/similar`` at 16 concurrent keep-alive clients over loopback.
3. ``POST /predict`` per query kind (photo, text, photo + text) at one client, and photo +
   text at 4 concurrent.
4. Throughput of ``POST /predict`` vs ``mlflow models serve`` on the same registered
   model and the same listings, one after the other, 4 concurrent clients.
5. 10,000 requests while the alias is moved and the API reloads, repeatedly: errors.
6. Similar-products precision@10 (same root category) from the index stage's metrics.

Run by hand; writes ``bench/results/serving.json``. The load generator runs on the same
2 cores as the server, so every figure includes its cost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import make_project_copy, run, venv_env  # noqa: E402

MODEL = "marketplace-combined"
TOKEN = "bench-token"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(project: Path) -> dict[str, str]:
    env = {**venv_env(), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    env["MARKETPLACE_ADMIN_TOKEN"] = TOKEN
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return env


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def start_api(project: Path) -> tuple[subprocess.Popen, str, float]:
    port = _port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=_env(project),
    )
    base = f"http://127.0.0.1:{port}"
    _wait_ready(f"{base}/health/ready", process)
    return process, base, time.perf_counter() - started


def cold_start(project: Path) -> dict[str, float]:
    code = (
        "import time; t = time.perf_counter()\n"
        "from marketplace.inference import Marketplace\n"
        "from marketplace.mlops.tracking import setup_tracking\n"
        "imported = time.perf_counter() - t; setup_tracking()\n"
        f"m = Marketplace.from_registry('{MODEL}', 'production')\n"
        "print(imported, m.info.load_seconds, time.perf_counter() - t)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=_env(project), capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    imported, load, total = map(float, out.stdout.split()[-3:])
    return {"imports_s": imported, "registry_load_s": load, "in_process_total_s": total}


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "n": len(ordered),
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p90_ms": 1000 * ordered[int(len(ordered) * 0.9)],
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "mean_ms": 1000 * statistics.fmean(ordered),
    }


async def _load(
    make_request: Any, base: str, n: int, concurrency: int, warmup: int = 50
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients, each sends its next request when one returns."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        for i in range(warmup):
            await make_request(client, i)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                t = time.perf_counter()
                try:
                    response = await make_request(client, i)
                    ok = response.status_code == 200
                    key = str(response.status_code)
                except httpx.HTTPError as exc:
                    ok, key = False, type(exc).__name__
                latencies.append(time.perf_counter() - t)
                if not ok:
                    errors[key] = errors.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        **_percentiles(latencies),
        "concurrency": concurrency,
        "rps": n / elapsed,
        "errors": errors,
    }


async def _raw_get_load(
    base: str, paths: list[str], n: int, concurrency: int, warmup: int = 200
) -> dict[str, Any]:
    """Closed loop of keep-alive HTTP/1.1 GETs written straight to the socket, as wrk does.

    httpx costs ~1 ms of CPU per request, and the client shares the server's two cores:
    with it, a fast endpoint measures the client. Here a request is a pre-encoded line and
    a response is read by its Content-Length (the API never chunks JSON).
    """
    host, port = base.removeprefix("http://").split(":")
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for p in paths]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(-warmup, n))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for i in counter:
                t = time.perf_counter()
                writer.write(requests[i % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                if i >= 0:
                    latencies.append(time.perf_counter() - t)
                    status = head[9:12].decode()
                    if status != "200":
                        errors[status] = errors.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        **_percentiles(latencies),
        "concurrency": concurrency,
        "rps": len(latencies) / elapsed,
        "errors": errors,
        "client": "raw sockets (uvloop)",
    }


def similar_latency(base: str, ids: list[str], n: int, concurrency: int = 16) -> dict[str, Any]:
    """``GET /products/{id}/similar?k=10`` over every product in turn, 16 clients."""
    import uvloop

    paths = [f"/products/{i}/similar?k=10" for i in ids]
    return uvloop.run(_raw_get_load(base, paths, n, concurrency))


def _listings(project: Path, n: int) -> list[tuple[bytes, str, float | None]]:
    import pandas as pd

    frame = pd.read_parquet(project / "outputs/clean/listings.parquet").dropna(subset=["image_id"])
    # A product may list several image rows; the export has a photo for one of them.
    photos = {p.stem for p in (project / "outputs/images").glob("*.jpg")}
    frame = frame[frame["image_id"].isin(photos)]
    rows = frame.drop_duplicates("product_id").sample(n, random_state=0)
    return [
        (
            (project / "outputs/images" / f"{r.image_id}.jpg").read_bytes(),
            f"{r.title}. {r.description}"[:400],
            None if pd.isna(r.price) else float(r.price),
        )
        for r in rows.itertuples()
    ]


def predict_latency(
    base: str, listings: list, n: int, concurrency: int, kind: str = "image+text"
) -> dict[str, Any]:
    """``POST /predict`` latency for one query kind: a photo alone, a text (and price)
    alone, or both: each kind is a product, with its own cost (the photo's CNN pass)."""

    async def request(client: httpx.AsyncClient, i: int) -> httpx.Response:
        image, text, price = listings[i % len(listings)]
        data = {} if kind == "image" else {"text": text}
        if price is not None and kind != "image":
            data["price"] = str(price)
        files = None if kind == "text" else {"image": ("p.jpg", image, "image/jpeg")}
        return await client.post("/predict", files=files, data=data)

    return asyncio.run(_load(request, base, n, concurrency, warmup=5))


def mlflow_serve_throughput(project: Path, listings: list, n: int) -> dict[str, Any]:
    port = _port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@production",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        cwd=project, env=_env(project), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/ping", process, timeout=300)

        async def request(client: httpx.AsyncClient, i: int) -> httpx.Response:
            image, text, price = listings[i % len(listings)]
            row = [base64.b64encode(image).decode(), text, price]
            body = {"dataframe_split": {"columns": ["image", "text", "price"], "data": [row]}}
            return await client.post("/invocations", json=body)

        return asyncio.run(_load(request, base, n, 4, warmup=5))
    finally:
        process.terminate()
        process.wait(timeout=30)


def reload_under_load(project: Path, base: str, ids: list[str], n: int) -> dict[str, Any]:
    """``n`` requests (90 % more-like-this, 10 % text predictions) while the alias moves."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    versions = sorted(
        int(v.version)
        for v in client.search_model_versions(f"name = '{MODEL}'")
        if "index_size" in v.tags
    )
    if not versions:
        raise RuntimeError("no indexed version of the model; run the pipeline first")
    # Two versions where there are (a retrain that yields identical weights reuses its
    # version): each swap is a full download, load and atomic swap either way.
    a, b = str(versions[-2] if len(versions) > 1 else versions[-1]), str(versions[-1])
    swaps: list[dict[str, Any]] = []

    async def mover(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=120) as admin:
            target = a
            while not stop.is_set():
                client.set_registered_model_alias(MODEL, "production", target)
                t = time.perf_counter()
                response = await admin.post(
                    "/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                swaps.append(
                    {"to": target, "status": response.status_code, "s": time.perf_counter() - t}
                )
                target = b if target == a else a
                await asyncio.sleep(0.5)

    async def request(http: httpx.AsyncClient, i: int) -> httpx.Response:
        if i % 10 == 0:
            return await http.post("/predict", data={"text": "mountain bike 21 gears"})
        return await http.get(f"/products/{ids[i % len(ids)]}/similar", params={"k": 10})

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        moving = asyncio.create_task(mover(stop))
        result = await _load(request, base, n, 16, warmup=0)
        stop.set()
        await moving
        return result

    result = asyncio.run(main())
    client.set_registered_model_alias(MODEL, "production", b)
    httpx.post(f"{base}/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    return {**result, "reloads": len(swaps), "reload_s": [round(s["s"], 2) for s in swaps]}


def build(project: Path, export: Path) -> None:
    """A scratch project on the real export: trained, indexed and promoted."""
    make_project_copy(project)
    run([sys.executable, "-m", "marketplace.data.ingest", "--from", str(export)], project)
    run(["dvc", "repro"], project)
    run([sys.executable, "-m", "marketplace.mlops.promotion"], project)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("/tmp/marketplace-serving-bench"))
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--export", type=Path, default=ROOT.parent / "shared/data/marketplace")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/serving.json")
    args = parser.parse_args()
    if args.build or not (args.project / "mlflow.db").exists():  # `make bench` on a fresh machine
        if not (args.export / "Products.csv").exists():
            print(f"skipped: no real export at {args.export} (see its SOURCE.md)")
            return 0
        build(args.project, args.export)
    project = args.project.resolve()
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "project": str(project)}
    results["cold_start"] = cold_start(project)
    print("cold start", results["cold_start"], flush=True)
    api, base, ready_s = start_api(project)
    results["cold_start"]["process_to_ready_s"] = ready_s
    try:
        import pandas as pd

        ids = list(pd.read_parquet(project / "outputs/index/products.parquet")["product_id"])
        random.Random(0).shuffle(ids)
        listings = _listings(project, 64)
        results["similar_product_16"] = similar_latency(base, ids, args.requests)
        print("similar", results["similar_product_16"], flush=True)
        for kind in ("image", "text", "image+text"):
            key = f"predict_{kind.replace('+', '_')}_1"
            results[key] = predict_latency(base, listings, 100, 1, kind)
            print(key, results[key], flush=True)
        results["predict_image_text_4"] = predict_latency(base, listings, 300, 4)
        print("predict x4", results["predict_image_text_4"], flush=True)
        results["reload_under_load"] = reload_under_load(project, base, ids, 10_000)
        print("reload", results["reload_under_load"], flush=True)
    finally:
        api.terminate()
        api.wait(timeout=30)
    results["mlflow_serve_predict_4"] = mlflow_serve_throughput(project, listings, 300)
    print("mlflow serve", results["mlflow_serve_predict_4"], flush=True)
    results["rps_ratio_vs_mlflow_serve"] = (
        results["predict_image_text_4"]["rps"] / results["mlflow_serve_predict_4"]["rps"]
    )
    results["index_metrics"] = json.loads((project / "metrics/index.json").read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
