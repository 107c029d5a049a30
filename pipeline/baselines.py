"""DVC stage baselines: the seed's linear price regression and pixel SVC, tracked in MLflow."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from marketplace.cli import exit_process, run
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_json
from marketplace.data.split import read_split
from marketplace.mlops.tracking import flatten, pipeline_parent_run, setup_tracking, standard_tags
from marketplace.training.baselines import pixel_svc, price_regression

log = logging.getLogger("pipeline.baselines")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=Path, default=paths.LISTINGS_FILE)
    parser.add_argument("--images", type=Path, default=paths.CLEAN_IMAGES_DIR)
    parser.add_argument("--split", type=Path, default=paths.SPLIT_DIR)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS_DIR / "baselines.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def body() -> None:
        import mlflow

        params = load_params(args.params).baselines
        listings = pd.read_parquet(args.listings)
        splits = read_split(args.split)
        setup_tracking()
        results = {}
        with pipeline_parent_run():
            for name, fit in (
                ("price_linear_regression", lambda: price_regression(listings, splits, params)),
                (
                    "svc_pixels",
                    lambda: pixel_svc(
                        listings.dropna(subset=["image_id"]), args.images, splits, params
                    ),
                ),
            ):
                with mlflow.start_run(run_name=name, nested=True, tags=standard_tags("baselines")):
                    result = fit()
                    mlflow.log_params(
                        {**flatten(params, "baselines."), **flatten(result.params, f"{name}.")}
                    )
                    mlflow.log_metrics(result.metrics)
                results.update(result.metrics)
                log.info("%s: %s", name, {k: round(v, 4) for k, v in result.metrics.items()})
        write_json(args.metrics, results)

    return run(body, "pipeline.baselines")


if __name__ == "__main__":
    exit_process(main())
