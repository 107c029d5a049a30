"""DVC stage clean_images: every photo -> RGB, fitted into a size x size black canvas.

Missing, corrupt and non-image files are reported with their reason (never a crash);
runs on all cores with a progress bar. Incremental: photos whose bytes and the params are
unchanged since the last run keep their canvas (``outputs/images/manifest.json``; the out
is ``persist: true``); ``--cold`` cleans everything again.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from marketplace.cli import exit_process, log_problems, run
from marketplace.compute.ray import runner
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_csv, write_json
from marketplace.data.images import clean_export_images

log = logging.getLogger("pipeline.clean_images")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=paths.DATA_DIR)
    parser.add_argument("--out", type=Path, default=paths.CLEAN_IMAGES_DIR)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS_DIR / "clean_images.json")
    parser.add_argument("--report", type=Path, default=paths.REPORTS_DIR / "clean_images.csv")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--cold", action="store_true", help="reuse nothing from the last run")
    args = parser.parse_args(argv)

    def body() -> None:
        all_params = load_params(args.params)
        params = all_params.clean_images
        started = time.perf_counter()
        report, metrics = clean_export_images(
            args.data,
            args.out,
            size=params.size,
            jpeg_quality=params.jpeg_quality,
            workers=params.workers,
            progress=not args.no_progress,
            runner=runner(all_params.compute),
            reuse=not args.cold,
        )
        elapsed = time.perf_counter() - started
        write_json(args.metrics, metrics)
        write_csv(args.report, report)
        failures = report[report["status"] != "ok"]
        log_problems(
            log,
            [
                f"{r.image_id or '-'} ({r.source or 'no file'}): {r.status}, {r.detail}"
                for r in failures.itertuples()
            ],
            str(args.report),
        )
        log.info(
            "cleaned %d of %d images (%d reused, %d computed) in %.1f s; failures: %s",
            metrics["cleaned"],
            metrics["unique_ids"],
            metrics["reused"],
            metrics["computed"],
            elapsed,
            metrics["failed"] or "none",
        )

    return run(body, "pipeline.clean_images")


if __name__ == "__main__":
    exit_process(main())
