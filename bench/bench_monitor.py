"""Benchmark the drift monitor: detection at the default thresholds, and false alarms.

A combined model is trained on the synthetic catalogue of ``tests/helpers/monitor.py``
(520 listings, 13 categories, real packaged encoders); 500-request windows are replayed
into prediction-log rows as serving logs them (the model's answers, the frozen encoders'
vectors) and judged by ``monitor.compare`` against the model's training reference at the
thresholds in params.yaml:

* 5 val replays (different seeds): alerts are false alarms;
* one category's listings only, and grey photos (val texts kept): alerts are detections.

    python bench/bench_monitor.py [--replays 5] [--requests 500]

Writes ``bench/results/monitor.json``. Shares the host's CPUs with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from marketplace.mlops.monitor import compare  # noqa: E402
from tests.helpers.monitor import (  # noqa: E402
    build_world,
    grey_photos,
    log_rows,
    one_category,
    val_replay,
)


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", type=int, default=5)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/monitor.json")
    args = parser.parse_args()
    started = time.perf_counter()
    world = build_world(Path(tempfile.mkdtemp(prefix="bench-monitor-")))
    built = time.perf_counter() - started
    windows = [(f"val replay {s}", "val", val_replay(world, args.requests, 100 + s))
               for s in range(args.replays)]  # fmt: skip
    windows += [
        ("one category only", "shift", one_category(world, args.requests, 7)),
        ("grey photos", "shift", grey_photos(world, args.requests, 8)),
    ]
    results = []
    for name, what, requests in windows:
        rows = pd.DataFrame(
            log_rows(world, requests, model_name="bench", model_version="1", start=0)
        )
        t = time.perf_counter()
        result = compare(world.reference, rows, world.params.monitor)
        seconds = time.perf_counter() - t
        checks = {
            f"{k.kind}: {c.name}": round(c.value, 3) for k in result.kinds for c in k.checks
        } | {f"all: {c.name}": round(c.value, 3) for c in result.overall}
        results.append(
            {"window": name, "expected": what, "alerts": result.alerts, "checks": checks,
             "compare_seconds": round(seconds, 2)}
        )  # fmt: skip
        print(f"{name:<20} {'ALERT' if result.alerts else 'ok':<6} {seconds:5.1f} s  "
              + "; ".join(result.alerts))  # fmt: skip
    false_alarms = sum(bool(r["alerts"]) for r in results if r["expected"] == "val")
    detected = sum(bool(r["alerts"]) for r in results if r["expected"] == "shift")
    summary = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "cpu": _cpu(),
        "data": "synthetic catalogue (tests/helpers/monitor.py), real packaged encoders",
        "requests_per_window": args.requests,
        "thresholds": world.params.monitor.model_dump(),
        "false_alarms": f"{false_alarms}/{args.replays}",
        "shifts_detected": f"{detected}/2",
        "world_seconds": round(built, 1),
        "windows": results,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"false alarms {summary['false_alarms']}, shifts detected {summary['shifts_detected']}")


if __name__ == "__main__":
    main()
