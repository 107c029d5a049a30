"""The team stack's targets (issue 13), measured in one run; results in bench/results/stack.json.

- ``make stack`` to all healthy (cold: fresh folder, initdb + MLflow's migrations; warm:
  the same folder restarted), target <= 15 s;
- API cold start from the remote registry (process start to /health/ready 200, the model
  and index downloaded through the server's artifact proxy), target <= 8 s;
- 20 concurrent registrations (forked processes: run + artifact + version): lost runs and
  versions (target 0) and wall time;
- predictions at 16 clients while the tracking server is down for 30 s (target 0 failed).

The model is the tests' tiny combined model (tests.helpers.tiny), trained and
registered into the stack once. Run: ``.venv/bin/python bench/bench_stack.py``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from ops.stack import Stack  # noqa: E402
from tests.helpers import running_api  # noqa: E402
from tests.helpers.stack import register_one  # noqa: E402

OUTAGE_S = 30.0
CLIENTS = 16


def _register_tiny(stack: Stack, workdir: Path) -> str:
    from tests.helpers.stack import register_tiny_production
    from tests.helpers.tiny import MODEL

    os.environ["MLFLOW_TRACKING_URI"] = stack.tracking_uri
    register_tiny_production(stack.tracking_uri, workdir)
    return MODEL


def _registrations(stack: Stack) -> dict:
    from mlflow import MlflowClient

    start_at = time.time() + 2
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(20) as pool:
        results = pool.starmap(register_one, [(i, stack.tracking_uri, start_at) for i in range(20)])
    wall = time.perf_counter() - started - 2
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name("concurrency")
    runs = {r.info.run_id for r in client.search_runs([experiment.experiment_id], max_results=100)}
    versions = client.search_model_versions("name = 'concurrency'")
    return {
        "writers": 20,
        "runs_found": len(runs & {r for r, _ in results}),
        "versions_found": len({v.version for v in versions}),
        "lost_runs": 20 - len(runs & {r for r, _ in results}),
        "lost_versions": 20 - len({v.version for v in versions}),
        "seconds_after_the_start_signal": round(wall, 2),
    }


def _outage(stack: Stack, api: str) -> dict:
    failures: list[str] = []
    latencies: list[float] = []
    phase = ["before"]
    counts = {"before": 0, "down": 0, "after": 0}
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=api, timeout=30) as http:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    response = http.post("/predict", data={"text": "office desk chair"})
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    ok, response = False, exc
                latencies.append(time.perf_counter() - t0)
                counts[phase[0]] += 1
                if not ok:
                    failures.append(str(response)[:200])

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    stack.stop_service("mlflow")
    phase[0] = "down"
    down_at = time.perf_counter()
    ready = httpx.get(f"{api}/health/ready", timeout=10)
    time.sleep(max(0.0, OUTAGE_S - (time.perf_counter() - down_at)))
    restart = time.perf_counter()
    stack.start("mlflow")
    restart_s = time.perf_counter() - restart
    phase[0] = "after"
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {
        "clients": CLIENTS,
        "outage_s": OUTAGE_S,
        "requests": counts,
        "failed": len(failures),
        "failures_sample": failures[:3],
        "ready_during_outage": [ready.status_code, ready.json().get("registry")],
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
        "mlflow_restart_to_healthy_s": round(restart_s, 2),
    }


def main() -> None:
    out: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_at_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="marketplace-bench-stack-") as tmp:
        Path(tmp).chmod(0o711)
        stack = Stack(Path(tmp) / "stack")
        stack.state["ephemeral"] = False  # as make stack runs it (fsync on)
        try:
            out["make_stack_cold_s"] = round(stack.up(), 2)
            stack.down()
            out["make_stack_warm_s"] = round(stack.up(), 2)
            t0 = time.perf_counter()
            name = _register_tiny(stack, Path(tmp) / "trainer")
            out["train_and_register_tiny_model_s"] = round(time.perf_counter() - t0, 2)
            colds = []
            for _ in range(3):
                t0 = time.perf_counter()
                with running_api(
                    stack.tracking_uri,
                    env={"MARKETPLACE_MODEL_NAME": name, "MARKETPLACE_ADMIN_TOKEN": "b"},
                ) as api:
                    colds.append(round(time.perf_counter() - t0, 2))
                    if len(colds) == 3:
                        out["outage"] = _outage(stack, api)
            out["api_cold_start_remote_s"] = colds
            out["registrations"] = _registrations(stack)
        finally:
            stack.down()
    target = ROOT / "bench" / "results" / "stack.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
