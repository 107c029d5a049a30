"""DVC stage clean_tabular: raw Products.csv + Images.csv -> one cleaned row per image.

Writes the cleaned listings (parquet), the label map, the cleaning metrics (rows in, out,
dropped and flagged by reason) and a per-row issue report.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from marketplace.cli import exit_process, log_problems, run
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_csv, write_json
from marketplace.data.tabular import clean_tables

log = logging.getLogger("pipeline.clean_tabular")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=paths.DATA_DIR)
    parser.add_argument("--listings", type=Path, default=paths.LISTINGS_FILE)
    parser.add_argument("--label-map", type=Path, default=paths.LABEL_MAP_FILE)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS_DIR / "clean_tabular.json")
    parser.add_argument("--issues", type=Path, default=paths.REPORTS_DIR / "clean_tabular.csv")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_params(args.params).clean_tabular
        result = clean_tables(args.data, params)
        args.listings.parent.mkdir(parents=True, exist_ok=True)
        result.listings.to_parquet(args.listings, index=False)
        result.label_map.save(args.label_map)
        write_json(args.metrics, result.report())
        write_csv(args.issues, result.issues_frame())
        log_problems(
            log,
            [
                f"{i.file} line {i.line} ({i.record_id or 'no id'}): {i.action}, "
                f"{i.reason}: {i.detail}"
                for i in result.issues
            ],
            str(args.issues),
        )
        log.info(
            "%d products -> %d kept; %d image rows -> %d kept; %d listing rows, %d classes",
            result.products_in,
            result.products_out,
            result.images_in,
            result.images_out,
            len(result.listings),
            len(result.label_map),
        )

    return run(body, "pipeline.clean_tabular")


if __name__ == "__main__":
    exit_process(main())
