"""Benchmark live listings: PUT latency, similar products with live changes, replay, kill -9.

Needs a project whose registry holds the real-data combined model with its index
(``--project``, as ``bench/bench_serving.py --build`` makes one; the newest
``marketplace-combined`` version is aliased ``production`` if no alias exists) and the real
export's photos (``--photos``). The catalogue logs are SQLite files in a scratch folder.

1. ``GET /products/{id}/similar`` p50 at 16 clients, before any live change (today).
2. ``PUT /products/{id}`` at 4 clients: with a real photo, and without one (1 and 4).
3. 1,000+ live changes applied (the puts above, built listings changed and deleted), then
   1. again, on the same server: the ratio is the target (≤ 1.2×).
4. Replay of 10,000 live listings whose encoder vectors are cached: in process
   (``LiveCatalogue.replay``) and process start to ready, against an empty log.
5. 5 cycles of: 16 clients putting and deleting, ``kill -9`` of the API, restart; every
   acknowledged change must be served after the restart (lost = 0).

With ``--put-rounds N`` it measures only ``PUT`` with a photo and ``/predict`` at 4 clients,
this tree's API against ``--baseline``'s in N alternating rounds.

Run by hand; writes ``bench/results/catalogue.json``. The load generator shares the CPU
with the server (and, on a shared machine, with other people's work).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.bench_serving import (  # noqa: E402
    _percentiles,
    _port,
    _wait_ready,
    predict_latency,
    similar_latency,
)
from tests.helpers import venv_env  # noqa: E402

MODEL = "marketplace-combined"
TOKEN = "bench-catalogue-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _env(project: Path, log_url: str, tree: Path = ROOT) -> dict[str, str]:
    return {
        **venv_env(),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MARKETPLACE_CATALOGUE_URL": log_url,
        "MARKETPLACE_CATALOGUE_TOKEN": TOKEN,
        "MARKETPLACE_CATALOGUE_POLL_S": "0.5",
    }


def start_api(
    project: Path, log_url: str, tree: Path = ROOT
) -> tuple[subprocess.Popen, str, float]:
    """The API over ``project`` and the log at ``log_url``, running ``tree``'s code."""
    port = _port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning"],
        cwd=tree,
        env=_env(project, log_url, tree),
    )
    base = f"http://127.0.0.1:{port}"
    _wait_ready(f"{base}/health/ready", process, timeout=300)
    return process, base, time.perf_counter() - started


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)


def ensure_alias(project: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    try:
        client.get_model_version_by_alias(MODEL, "production")
    except Exception:
        latest = max(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
        client.set_registered_model_alias(MODEL, "production", str(latest))


def enlarge_index(project: Path, n: int) -> dict[str, Any]:
    """Replace the served version's index (in this scratch registry only) by one of ``n``
    synthetic listings embedded by the model's own heads (random encoder outputs), 80 %
    with a photo, "more like this" lists precomputed as the index stage does: a registry
    built on a sample still gets a catalogue of the real export's size to search."""
    import pandas as pd

    from marketplace.inference import Marketplace
    from marketplace.search.build import (
        build_product_index,
        precompute_neighbours,
        save_index,
        with_text_weight,
    )
    from marketplace.search.index import ProductIndex

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    market = Marketplace.from_registry(MODEL, "production")
    meta = market.index.meta
    folder = next(
        p.parent
        for p in project.glob("mlruns/**/artifacts/index/index.json")
        if ProductIndex.load(p.parent).meta.package_sha256 == meta.package_sha256
    )
    rng = np.random.default_rng(1)
    has_image = rng.random(n) < 0.8
    ids = [f"syn-{i:05d}" for i in range(n)]
    records = pd.DataFrame(
        {
            "product_id": ids,
            "title": [f"synthetic listing {i}" for i in range(n)],
            "price": rng.integers(1, 500, n).astype(float),
            "category": rng.choice(list(market.categories), n),
            "location": "Leeds, West Yorkshire",
            "image_id": pd.array(
                [p if h else None for p, h in zip(ids, has_image, strict=True)], "string"
            ),
        }
    )
    text = np.abs(rng.standard_normal((n, market.classifier.text_dim))).astype(np.float32)
    image_dim = market.classifier.image_encoder.embedding_dim
    image = np.abs(rng.standard_normal((n, image_dim))).astype(np.float32)
    index = build_product_index(
        market.classifier.package, records, text, image, has_image,
        model_name=meta.model_name, model_version=meta.model_version,
        package_sha=meta.package_sha256, factory=meta.factory, nprobe=meta.nprobe,
        ef_search=meta.ef_search, ef_construction=80,
    )  # fmt: skip
    index = precompute_neighbours(with_text_weight(index, meta.text_weight), 100)
    save_index(index, folder)
    return {"products": n, "with_photo": int(has_image.sum()), "dim": index.meta.dim,
            "neighbours": index.meta.neighbours, "factory": index.meta.factory}  # fmt: skip


def photos(folder: Path, n: int) -> list[bytes]:
    files = sorted(folder.glob("*.jpg"))
    return [p.read_bytes() for p in random.Random(0).sample(files, n)]


def put_rounds(
    project: Path, scratch: Path, images: list[bytes], rounds: int, baseline: Path | None
) -> dict[str, list[dict[str, Any]]]:
    """``PUT`` with a photo and ``/predict`` photo + text, 4 clients each: this tree's API
    and ``baseline``'s in alternating rounds, each API on a fresh log (``--put-rounds``)."""
    trees = {"this": ROOT, **({"baseline": baseline.resolve()} if baseline else {})}
    listings = [(image, "bench listing. as new", 25.0) for image in images]
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for turn in range(rounds):
        for name, tree in trees.items():
            log_url = f"sqlite:///{scratch / f'put-{name}-{turn}.db'}"
            process, base, _ = start_api(project, log_url, tree)
            try:
                out[name].append(
                    {
                        "put_photo_4": put_latency(base, 200, 4, images),
                        "predict_image_text_4": predict_latency(base, listings, 200, 4),
                    }
                )
            finally:
                stop(process)
            print(name, {k: round(v["p50_ms"], 1) for k, v in out[name][-1].items()}, flush=True)
    return out


def put_latency(base: str, n: int, concurrency: int, images: list[bytes] | None) -> dict[str, Any]:
    """Closed loop of new listings (``bench-<i>``), with a photo or without."""
    counter = iter(range(n))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    prefix = "photo" if images else "text"

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            files = None
            if images:
                files = {"image": ("p.jpg", images[i % len(images)], "image/jpeg")}
            data = {"title": f"bench listing {prefix} {i}", "description": "as new", "price": "25"}
            started = time.perf_counter()
            answer = await client.put(f"/products/bench-{prefix}-{i}", data=data, files=files)
            latencies.append(time.perf_counter() - started)
            if answer.status_code not in (200, 201):
                errors[str(answer.status_code)] = errors.get(str(answer.status_code), 0) + 1

    async def main() -> float:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=base, headers=AUTH, limits=limits, timeout=60) as c:
            for i in range(3):  # warm-up
                await c.put(f"/products/warm-{prefix}-{i}", data={"title": "warm up"})
            started = time.perf_counter()
            await asyncio.gather(*(worker(c) for _ in range(concurrency)))
            return time.perf_counter() - started

    elapsed = asyncio.run(main())
    return {**_percentiles(latencies), "concurrency": concurrency, "rps": n / elapsed,
            "errors": errors}  # fmt: skip


def change_built(base: str, ids: list[str], n_changed: int, n_deleted: int) -> None:
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as client:
        for pid in ids[:n_changed]:
            answer = client.put(f"/products/{pid}", data={"title": f"changed {pid}", "price": "9"})
            assert answer.status_code == 200, answer.text
        for pid in ids[n_changed : n_changed + n_deleted]:
            assert client.delete(f"/products/{pid}").status_code == 204


def fill_log(project: Path, url: str, n: int, thumb: bytes) -> dict[str, Any]:
    """``n`` live listings written straight into a log, with their encoder vectors cached
    (random vectors under the served model's encoder keys: replay runs only the heads)."""
    import sqlalchemy as sa

    from marketplace.inference import Marketplace
    from marketplace.search import catalogue_schema as schema
    from marketplace.search.catalogue import PUT, CatalogueLog, sha256
    from marketplace.search.live import LiveCatalogue

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    market = Marketplace.from_registry(MODEL, "production")
    live = LiveCatalogue(market)
    text_dim = market.classifier.text_dim
    image_dim = market.classifier.image_encoder.embedding_dim
    catalogue = CatalogueLog(url)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    changes, vectors = [], []
    for i in range(n):
        image = thumb + i.to_bytes(4, "big")  # distinct photos (JPEG decoders stop at EOI)
        title = f"replayed listing {i}"
        changes.append(
            {"product_id": f"replay-{i}", "op": PUT, "ts": time.time(), "title": title,
             "price": float(i % 500), "category": "Other Goods", "category_source": "seller",
             "image": image, "image_sha256": sha256(image)}
        )  # fmt: skip
        vectors.append((sha256(title), live.text_encoder, rng.standard_normal(text_dim)))
        vectors.append((sha256(image), live.image_encoder, rng.standard_normal(image_dim)))
    with catalogue.engine.begin() as conn:  # one transaction: this is set-up, not the API
        conn.execute(sa.insert(schema.changes), changes)
    catalogue.cache_vectors(vectors)
    written = time.perf_counter() - started
    fresh = LiveCatalogue(market)
    fresh.replay(catalogue, lists=False)  # as the API replays at load
    assert fresh.size == n and fresh.computed_vectors == 0, fresh.describe()
    started = time.perf_counter()
    fresh.refresh_lists()  # what the API's follow loop then does in the background
    lists_s = time.perf_counter() - started
    state = fresh._state
    lists_mb = 0.0 if state.live_hits is None else (state.live_hits.nbytes * 2) / 1e6
    catalogue.dispose()
    return {"listings": n, "write_s": written, "replay_in_process_s": fresh.replay_seconds,
            "live_lists_build_s": lists_s, "live_lists_mb": lists_mb}  # fmt: skip


def kill_cycles(project: Path, url: str, cycles: int, seconds: float) -> dict[str, Any]:
    """Writers, ``kill -9``, restart, check: acknowledged changes lost over ``cycles``."""
    history: dict[str, list[tuple[str, str | None, str]]] = {}
    acked_total = lost = 0
    process, base, _ = start_api(project, url)
    for cycle in range(cycles):
        stop_event = threading.Event()

        def client(n: int, base: str = base, cycle: int = cycle, stop_event=stop_event) -> None:
            rng = random.Random(cycle * 100 + n)
            with httpx.Client(base_url=base, headers=AUTH, timeout=60) as http:
                step = 0
                while not stop_event.is_set():
                    step += 1
                    pid = f"k{n}-{rng.randrange(8)}"
                    ops = history.setdefault(pid, [])
                    try:
                        if ops and ops[-1][0] == "put" and rng.random() < 0.3:
                            ops.append(("delete", None, "unknown"))
                            http.delete(f"/products/{pid}").raise_for_status()
                            ops[-1] = ("delete", None, "ack")
                        else:
                            title = f"kill {pid} cycle {cycle} step {step}"
                            ops.append(("put", title, "unknown"))
                            http.put(f"/products/{pid}", data={"title": title}).raise_for_status()
                            ops[-1] = ("put", title, "ack")
                    except httpx.HTTPError:
                        return

        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        process.send_signal(signal.SIGKILL)
        process.wait()
        stop_event.set()
        for thread in threads:
            thread.join()
        process, base, _ = start_api(project, url)
        with httpx.Client(base_url=base, timeout=60) as http:
            for pid, ops in history.items():
                got = http.get(f"/products/{pid}")
                title = got.json()["title"] if got.status_code == 200 else None
                acked = [op for op in ops if op[2] == "ack"]
                allowed = {acked[-1][1] if acked else None}
                if ops and ops[-1][2] == "unknown":
                    allowed.add(ops[-1][1])
                    ops.pop()  # settled now: what the restarted server serves is the truth
                    ops.append(("delete" if title is None else "put", title, "ack"))
                if title not in allowed:
                    lost += 1
        acked_total = sum(op[2] == "ack" for ops in history.values() for op in ops)
        print(f"kill -9 cycle {cycle + 1}: {acked_total} acknowledged so far, lost {lost}")
    stop(process)
    return {"cycles": cycles, "acknowledged": acked_total, "lost": lost, "clients": 16}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("/tmp/marketplace-serving-bench"))
    parser.add_argument(
        "--photos", type=Path, default=ROOT.parent / "shared/data/marketplace/images"
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--replay", type=int, default=10_000, help="0: skip")
    parser.add_argument("--kill-cycles", type=int, default=5, help="0: skip")
    parser.add_argument("--rounds", type=int, default=3, help="similar before/after turns")
    parser.add_argument(
        "--catalogue", type=int, default=0,
        help="replace the served index by this many synthetic listings (a sample registry)",
    )  # fmt: skip
    parser.add_argument(
        "--put-rounds", type=int, default=0,
        help="only PUT with a photo and /predict at 4 clients, this many rounds alternating "
        "with --baseline's API; 0: the full run",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/catalogue.json")
    parser.add_argument(
        "--baseline", type=Path,
        help="another checkout (the code before a change): a third server on the same live "
        "log, in the same similar rounds (key 'baseline')",
    )  # fmt: skip
    args = parser.parse_args()
    project = args.project.resolve()
    if not (project / "mlflow.db").exists() or not args.photos.is_dir():
        print(f"skipped: no registry at {project} or no photos at {args.photos}")
        return 0
    ensure_alias(project)
    if args.catalogue:
        results_index = enlarge_index(project, args.catalogue)
        print("index", results_index, flush=True)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), "")
    results: dict[str, Any] = {"machine": {"cpu": model, "cpus": os.cpu_count()}}
    if args.catalogue:
        results["index"] = results_index
    scratch = Path(tempfile.mkdtemp(prefix="catalogue-bench-"))
    images = photos(args.photos, 64)
    if args.put_rounds:
        rounds = put_rounds(project, scratch, images, args.put_rounds, args.baseline)
        results["put_rounds"] = rounds
        results["median_p50_ms"] = {
            name: {
                key: statistics.median(r[key]["p50_ms"] for r in runs)
                for key in ("put_photo_4", "predict_image_text_4")
            }
            for name, runs in rounds.items()
        }
        results["load_average"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["median_p50_ms"], indent=2))
        return 0

    url = f"sqlite:///{scratch / 'serving.db'}"
    process, base, _ = start_api(project, url)
    try:
        from marketplace.inference import Marketplace
        from marketplace.search.index import ProductIndex

        served = Marketplace.from_registry(MODEL, "production").index.meta.package_sha256
        ids = next(
            list(index.products["product_id"])
            for index in map(
                ProductIndex.load,
                (p.parent for p in project.glob("mlruns/**/artifacts/index/index.json")),
            )
            if index.meta.package_sha256 == served
        )
        random.Random(0).shuffle(ids)
        results["similar_product_16_before"] = similar_latency(base, ids, args.requests)
        print("similar before", results["similar_product_16_before"], flush=True)
        results["put_photo_4"] = put_latency(base, 200, 4, images)
        print("put photo x4", results["put_photo_4"], flush=True)
        results["put_text_1"] = put_latency(base, 200, 1, None)
        print("put text x1", results["put_text_1"], flush=True)
        results["put_text_4"] = put_latency(base, 400, 4, None)
        print("put text x4", results["put_text_4"], flush=True)
        # The same model work through /predict, in the same run: what PUT adds to it.
        listings = [(image, "bench listing. as new", 25.0) for image in images]
        results["predict_image_text_4"] = predict_latency(base, listings, 200, 4)
        results["predict_text_1"] = predict_latency(base, listings, 200, 1, "text")
        results["predict_text_4"] = predict_latency(base, listings, 400, 4, "text")
        for key in ("predict_image_text_4", "predict_text_1", "predict_text_4"):
            print(key, results[key], flush=True)
        change_built(base, ids[-400:], 200, 200)  # 800 puts before + 400 built = 1,200 changes
        queried = ids[:-400]
        # Today's API (an empty log) beside this one, measured in turns: the machine is
        # shared, so each ratio compares two runs a few seconds apart.
        other, plain, _ = start_api(project, f"sqlite:///{scratch / 'empty-similar.db'}")
        old = old_base = None
        if args.baseline is not None:
            old, old_base, _ = start_api(project, url, args.baseline.resolve())
        rounds = []
        try:
            for _ in range(args.rounds):
                before = similar_latency(plain, queried, args.requests)
                after = similar_latency(base, queried, args.requests)
                rounds.append({"before": before, "after": after,
                               "ratio_p50": after["p50_ms"] / before["p50_ms"]})  # fmt: skip
                if old_base is not None:
                    baseline = similar_latency(old_base, queried, args.requests)
                    rounds[-1]["baseline"] = baseline
                    rounds[-1]["baseline_ratio_p50"] = baseline["p50_ms"] / before["p50_ms"]
                print("similar before/after", before["p50_ms"], after["p50_ms"],
                      rounds[-1].get("baseline", {}).get("p50_ms"), flush=True)  # fmt: skip
        finally:
            stop(other)
            if old is not None:
                stop(old)
        results["similar_rounds"] = rounds
        results["similar_after_over_before_p50_median"] = statistics.median(
            r["ratio_p50"] for r in rounds
        )
        if old_base is not None:
            results["similar_baseline_over_before_p50_median"] = statistics.median(
                r["baseline_ratio_p50"] for r in rounds
            )
        results["load_average"] = os.getloadavg()
        live = httpx.get(f"{base}/products/bench-text-5/similar?k=10").json()["results"]
        from marketplace.search.catalogue import CatalogueLog

        results["live_changes_applied"] = CatalogueLog(url).last_seq()
        assert len(live) == 10
    finally:
        stop(process)

    if args.replay:
        results["replay"] = replay(project, scratch, images, args.replay)
    if args.kill_cycles:
        results["kill_9"] = kill_cycles(
            project, f"sqlite:///{scratch / 'kill.db'}", args.kill_cycles, 8.0
        )
        print("kill -9", results["kill_9"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def replay(project: Path, scratch: Path, images: list[bytes], n: int) -> dict[str, Any]:
    """Start to ready with ``n`` cached live listings in the log, and with none."""
    thumb_out = io.BytesIO()
    from PIL import Image

    with Image.open(io.BytesIO(images[0])) as photo:
        photo.convert("RGB").resize((120, 90)).save(thumb_out, "JPEG", quality=70)
    replay_url = f"sqlite:///{scratch / 'replay.db'}"
    result = fill_log(project, replay_url, n, thumb_out.getvalue())
    empty_url = f"sqlite:///{scratch / 'empty.db'}"
    process, _, ready_empty = start_api(project, empty_url)
    stop(process)
    process, base, ready_full = start_api(project, replay_url)
    assert httpx.get(f"{base}/products/replay-7/similar?k=5").status_code == 200
    stop(process)
    result |= {"start_to_ready_empty_log_s": ready_empty,
               "start_to_ready_full_log_s": ready_full}  # fmt: skip
    print("replay", result, flush=True)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
