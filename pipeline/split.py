"""DVC stage split: product ids -> train/val/test by a hash of the id (stable as it grows)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from marketplace.cli import exit_process, run
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_csv, write_json
from marketplace.data.split import split_products, split_summary, write_split

log = logging.getLogger("pipeline.split")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=Path, default=paths.LISTINGS_FILE)
    parser.add_argument("--out", type=Path, default=paths.SPLIT_DIR)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS_DIR / "split.json")
    parser.add_argument("--report", type=Path, default=paths.REPORTS_DIR / "split.csv")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_params(args.params).split
        listings = pd.read_parquet(args.listings, columns=["product_id", "root_category"])
        splits = split_products(
            listings,
            seed=params.seed,
            val_fraction=params.val_fraction,
            test_fraction=params.test_fraction,
        )
        write_split(splits, args.out)
        metrics, per_category = split_summary(listings, splits)
        write_json(args.metrics, metrics)
        write_csv(args.report, per_category)
        log.info("products: %s", {name: len(ids) for name, ids in splits.items()})

    return run(body, "pipeline.split")


if __name__ == "__main__":
    exit_process(main())
