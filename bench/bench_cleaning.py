"""Benchmark the cleaning half of the pipeline on the real export.

Measures, on this machine:
1. ``clean_images`` throughput on the real photos (cleaned images per second), with one
   worker process and with one per core, at the canvas size in params.yaml;
2. the whole cleaning as a user runs it: import the real export into a scratch copy of the
   project (``marketplace.data.ingest``), a cold ``dvc repro`` (clean_tabular, clean_images, split),
   then a no-op ``dvc repro`` (median of 5).

Run by hand (``make bench``); results go to stdout as a Markdown table and to
``bench/results/cleaning.json``. Figures are copied into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.helpers (scratch project copies)

from marketplace.core.config import load_params  # noqa: E402
from marketplace.data.images import clean_image_files, index_image_files  # noqa: E402
from tests.helpers import make_project_copy, run  # noqa: E402


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def throughput(export: Path, size: int, quality: int, workers: int, scratch: Path) -> dict:
    """Clean every present photo once; images per second over the whole run."""
    images_dir = export / "images"
    files = index_image_files(images_dir)
    for path in files.values():  # warm the page cache: measure decoding, not the disk
        path.read_bytes()
    ids = sorted(files)
    out = scratch / f"throughput-{workers}"
    results: list = []
    seconds = _timed(
        lambda: results.extend(
            clean_image_files(
                ids,
                images_dir,
                out,
                size=size,
                jpeg_quality=quality,
                workers=workers,
                progress=False,
            )
        )
    )
    ok = sum(r.status == "ok" for r in results)
    return {
        "workers": workers,
        "images": ok,
        "seconds": round(seconds, 2),
        "images_per_s": round(ok / seconds, 1),
    }


def whole_cleaning(export: Path, scratch: Path) -> dict:
    """Ingest + cold ``dvc repro`` + no-op ``dvc repro`` in a scratch project."""
    project = make_project_copy(scratch / "project")
    ingest = _timed(
        lambda: run(
            [sys.executable, "-m", "marketplace.data.ingest", "--from", str(export)], project
        )
    )
    cold = _timed(lambda: run(["dvc", "repro"], project))
    noop = [_timed(lambda: run(["dvc", "repro"], project)) for _ in range(5)]
    metrics = json.loads((project / "metrics" / "clean_images.json").read_text())
    return {
        "ingest_s": round(ingest, 1),
        "cold_repro_s": round(cold, 1),
        "noop_repro_s_median": round(statistics.median(noop), 2),
        "noop_repro_s_max": round(max(noop), 2),
        "clean_images_metrics": metrics,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/marketplace")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/cleaning.json")
    args = parser.parse_args()
    if not (args.data / "Products.csv").is_file():
        print(f"skipped: real export not found at {args.data}", file=sys.stderr)
        return 0
    params = load_params(ROOT / "params.yaml").clean_images
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-cleaning-") as tmp:
        scratch = Path(tmp)
        rates = [
            throughput(args.data, params.size, params.jpeg_quality, w, scratch)
            for w in sorted({1, cores})
        ]
        pipeline = whole_cleaning(args.data, scratch)
    result = {
        "machine": {
            "cpus": cores,
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "canvas_size": params.size,
        "clean_images_throughput": rates,
        "pipeline": pipeline,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| measure | value |\n|---|---|")
    for r in rates:
        print(
            f"| clean_images, {r['workers']} worker(s), {params.size}px | "
            f"{r['images_per_s']} img/s ({r['images']} images in {r['seconds']} s) |"
        )
    print(f"| ingest real export | {pipeline['ingest_s']} s |")
    print(
        f"| cold dvc repro (clean_tabular + clean_images + split) | {pipeline['cold_repro_s']} s |"
    )
    print(
        f"| no-op dvc repro (median of 5 / max) | {pipeline['noop_repro_s_median']} s / "
        f"{pipeline['noop_repro_s_max']} s |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
