"""DVC stage index: the FAISS similar-products index of the catalogue, in the registry.

    python -m pipeline.index

Finds the registered version of the combined model in ``outputs/models/combined`` (by its
package hash), embeds every product into that model's index space, builds the FAISS index
(``index.factory``), copies the listings' thumbnails (the ``thumbnails`` stage) beside
it, reports precision@k of test-product queries, and logs the index into
that model version's artifacts so that ``models:/<name>/<version>`` carries it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from marketplace.cli import exit_process, run
from marketplace.compute.ray import runner
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_json
from marketplace.data.split import read_split
from marketplace.features.embedding import EmbeddingSet
from marketplace.mlops.registry import INDEX_TAG, attach_index, find_version
from marketplace.mlops.tracking import flatten, pipeline_parent_run, setup_tracking, standard_tags
from marketplace.models.classifier import ClassifierPackage
from marketplace.search.build import evaluate_index, index_catalogue, save_index
from marketplace.search.index import package_sha256
from marketplace.search.thumbnails import ThumbnailSet, thumbnail_metrics
from marketplace.training.inputs import products_table

log = logging.getLogger("pipeline.index")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def body() -> None:
        import mlflow

        params = load_params(args.params)
        model_dir = paths.MODELS_DIR / "combined"
        package = ClassifierPackage.load(model_dir)
        sha = package_sha256(model_dir)
        name = params.registry.combined
        setup_tracking()
        version = find_version(name, sha)
        products = products_table(pd.read_parquet(paths.LISTINGS_FILE))
        split = read_split(paths.SPLIT_DIR)
        index, tuning = index_catalogue(
            package,
            products,
            EmbeddingSet.load(paths.TEXT_EMBEDDINGS_FILE),
            EmbeddingSet.load(paths.IMAGE_EMBEDDINGS_FILE),
            params.index,
            model_name=name,
            model_version=version.version,
            package_sha=sha,
            tune_ids=split["val"],
            runner=runner(params.compute),
        )
        save_index(index, paths.INDEX_DIR)
        # Listing photos for the search page (GET /products/{id}/image), in the index folder.
        thumbnails = ThumbnailSet.load(paths.THUMBNAILS_DIR)
        if thumbnails is not None:
            thumbnails.save(paths.INDEX_DIR)
        metrics = {
            "size": float(len(index)),
            "with_image": float(index.meta.with_image),
            **thumbnail_metrics(thumbnails),
            **tuning,
            **evaluate_index(index, split["test"], params.index.eval_k, params.index.eval_queries),
        }
        with (
            pipeline_parent_run(),
            mlflow.start_run(run_name="index", nested=True, tags=standard_tags("index")),
        ):
            mlflow.log_params({**flatten(params.index, "index."), "model_version": version.version})
            mlflow.log_metrics(metrics)
            attach_index(
                name,
                version,
                paths.INDEX_DIR,
                {
                    INDEX_TAG: str(len(index)),
                    "index_factory": params.index.factory,
                    **{f"index_{k}": f"{v:.6g}" for k, v in metrics.items() if "precision" in k},
                },
            )
        write_json(paths.METRICS_DIR / "index.json", metrics)
        log.info(
            "indexed %d products (%d with a photo) for %s version %s; %s",
            len(index),
            index.meta.with_image,
            name,
            version.version,
            {k: round(v, 4) for k, v in metrics.items() if "precision" in k},
        )

    return run(body, "pipeline.index")


if __name__ == "__main__":
    exit_process(main())
