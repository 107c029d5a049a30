"""What watching production costs: the prediction log and a shadow version, on the real model.

API servers over the same registry (the real-data project ``bench_serving.py --build``
makes), started side by side and measured in interleaved rounds, so that a busy moment on
the shared machine hits every variant alike:

- ``off``: ``MARKETPLACE_PREDICTION_LOG=false``;
- ``log``: the prediction log on (SQLite file, the default writer: a child process);
- ``log_thread``: the same with ``MARKETPLACE_PREDICTION_LOG_PROCESS=false`` (a thread);
- ``log_base`` (``--baseline <checkout>``): the log on, running another checkout's code;
- ``shadow``: the log on and ``MARKETPLACE_SHADOW_ALIAS=challenger`` (the alias set to the
  production version here: one real version exists; a retrained head shares its encoders
  the same way, so the shadow costs the same).

Per round and variant: ``GET /products/{id}/similar?k=10`` at 16 clients (raw sockets),
``POST /predict`` photo + text at 4 clients and at 1 client. Targets (issue "Watch
production"): the log costs <= 5 % of p50 and of throughput on the first two; the shadow
<= 10 % of /predict p50. Writes ``bench/results/watch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_serving import (  # noqa: E402
    MODEL,
    _listings,
    _port,
    _wait_ready,
    predict_latency,
    similar_latency,
)
from tests.helpers import venv_env  # noqa: E402

VARIANTS = {
    "off": {"MARKETPLACE_PREDICTION_LOG": "false"},
    "log": {},  # the default writer: a child process
    "log_thread": {"MARKETPLACE_PREDICTION_LOG_PROCESS": "false"},  # a writer thread
    "shadow": {"MARKETPLACE_SHADOW_ALIAS": "challenger"},
}


def start(
    project: Path, log_dir: Path, name: str, extra: dict[str, str], tree: Path = ROOT
) -> tuple[Any, str]:
    """An API server over ``project``'s registry, running the code of ``tree`` (this work
    tree, or ``--baseline``'s: the same measure of the code before a change, in one run)."""
    env = {**venv_env(), "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{tree / 'src'}:{tree}"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env["MARKETPLACE_PREDICTION_LOG_URL"] = f"sqlite:///{log_dir / f'{name}.db'}"
    env.update(extra)
    port = _port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning"],
        cwd=tree,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    _wait_ready(f"{base}/health/ready", process, timeout=180)
    return process, base


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "rps": statistics.median(r["rps"] for r in runs),
        "errors": sum(sum(r["errors"].values()) for r in runs),
    }


def in_process_cost(project: Path, listings: list, ids: list[str], n: int = 2000) -> dict:
    """The log's CPU per answer, measured alone (the servers' figures drown in the shared
    machine's noise): building and queueing a row on the event loop's thread, and writing
    it (the writer thread), for a photo + text prediction and a more-like-this answer."""
    from starlette.requests import Request

    from marketplace.inference import Listing, Marketplace
    from marketplace.mlops.tracking import setup_tracking
    from serving.settings import Settings
    from serving.watch import Watch, log_predict, log_product_similar

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    setup_tracking(project)
    market = Marketplace.from_registry(MODEL, "production")
    image, text, price = listings[0]
    listing = Listing(image, text, price)
    prediction = market.predict_encoded_many([listing])[0]
    results = market.similar_to_product(ids[0], k=10)
    out: dict[str, Any] = {}
    for writer in ("thread", "process"):
        with tempfile.TemporaryDirectory() as tmp:
            from prometheus_client import CollectorRegistry

            settings = Settings(
                prediction_log_url=f"sqlite:///{tmp}/log.db",
                prediction_log_process=writer == "process",
            )
            watch = Watch(settings, CollectorRegistry())

            class App:
                class state:  # noqa: N801
                    pass

            App.state.watch = watch
            scope = {"type": "http", "app": App, "headers": [], "client": ("127.0.0.1", 1),
                     "marketplace.started": time.perf_counter()}  # fmt: skip
            request = Request(scope)
            import asyncio

            asyncio.run(watch.start(lambda alias: None))  # type: ignore[arg-type,return-value]
            assert watch.log is not None
            watch.log.flush_interval_s = 1000  # write only when asked, to time it alone
            watch.log.batch_size = 10**9
            for name, call in (
                ("predict_image_text", partial(log_predict, request, market, listing, prediction)),
                ("product_similar", partial(log_product_similar, request, market, results)),
            ):
                started = time.perf_counter()
                for _ in range(n):
                    call()
                queued = time.perf_counter() - started
                started, cpu = time.perf_counter(), time.process_time()
                watch.log.flush(120)
                written = time.perf_counter() - started
                # The API process's CPU for the write (the GIL's cost to the event loop):
                # the whole write for a thread writer, the pickling for a process writer.
                api_cpu = time.process_time() - cpu
                out[f"{name}_{writer}"] = {
                    "queue_us": 1e6 * queued / n,
                    "write_us": 1e6 * written / n,
                    "write_api_cpu_us": 1e6 * api_cpu / n,
                }
            asyncio.run(watch.stop())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("/tmp/marketplace-serving-bench"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--similar-requests", type=int, default=4000)
    parser.add_argument("--predict-requests", type=int, default=120)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/watch.json")
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git archive` of the commit before a change): adds the "
        "variant log_base, its server with the log on, measured in the same rounds",
    )
    parser.add_argument("--no-shadow", action="store_true", help="skip the shadow variant")
    args = parser.parse_args()
    variants = {k: (v, ROOT) for k, v in VARIANTS.items() if k != "shadow" or not args.no_shadow}
    if args.baseline is not None:
        variants["log_base"] = ({}, args.baseline.resolve())
    project = args.project.resolve()
    if not (project / "mlflow.db").exists():
        print(f"skipped: no built project at {project} (bench/bench_serving.py --build)")
        return 0
    import pandas as pd
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    production = client.get_model_version_by_alias(MODEL, "production").version
    client.set_registered_model_alias(MODEL, "challenger", production)
    ids = list(pd.read_parquet(project / "outputs/index/products.parquet")["product_id"])
    listings = _listings(project, 64)
    if args.in_process_only:
        print(json.dumps(in_process_cost(project, listings, ids), indent=2))
        return 0
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines()
                       if line.startswith("Model name")), "?")  # fmt: skip
    results: dict[str, Any] = {
        "cpu": model_name,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "raw": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        servers = {
            name: start(project, Path(tmp), name, env, tree)
            for name, (env, tree) in variants.items()
        }
        try:
            raw: dict[str, dict[str, list]] = {v: {} for v in variants}
            for round_ in range(args.rounds):
                order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
                for name in order:
                    base = servers[name][1]
                    runs = raw[name]
                    runs.setdefault("similar_16", []).append(
                        similar_latency(base, ids, args.similar_requests)
                    )
                    if args.predict_requests:
                        runs.setdefault("predict_4", []).append(
                            predict_latency(base, listings, args.predict_requests, 4)
                        )
                        runs.setdefault("predict_1", []).append(
                            predict_latency(base, listings, args.predict_requests // 2, 1)
                        )
                    p50 = {k: round(v[-1]["p50_ms"], 2) for k, v in runs.items()}
                    rps = {k: round(v[-1]["rps"], 1) for k, v in runs.items()}
                    print(round_, name, "p50", p50, "rps", rps, flush=True)
            results["raw"] = raw
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=60)
        logged = {}
        import sqlalchemy as sa

        for name in [v for v in variants if v != "off"]:
            engine = sa.create_engine(f"sqlite:///{Path(tmp) / f'{name}.db'}")
            with engine.connect() as connection:
                logged[name] = dict(
                    connection.execute(
                        sa.text("SELECT role, count(*) FROM predictions GROUP BY role")
                    ).all()
                )
        results["logged_rows"] = logged
    client.delete_registered_model_alias(MODEL, "challenger")
    summary = {v: {k: _summary(r) for k, r in raw.items()} for v, raw in results["raw"].items()}
    results["summary"] = summary
    results["in_process_us_per_answer"] = in_process_cost(project, listings, ids)
    ratios: dict[str, float] = {}
    for a, b in (("log", "off"), ("log_thread", "off"), ("log_base", "off"), ("shadow", "log")):
        for measure, stat in (("similar_16", "p50_ms"), ("similar_16", "rps"),
                              ("predict_4", "p50_ms"), ("predict_4", "rps"),
                              ("predict_1", "p50_ms")):  # fmt: skip
            if measure in summary.get(a, {}) and measure in summary.get(b, {}):
                key = f"{a}_vs_{b}_{measure}_{stat.removesuffix('_ms')}"
                ratios[key] = summary[a][measure][stat] / summary[b][measure][stat]
    results["ratios"] = ratios
    results["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        json.dumps({k: results[k] for k in ("cpu", "summary", "ratios", "logged_rows")}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
