"""DVC stages train_vision / train_text / train_combined: a head on cached embeddings.

    python -m pipeline.train --kind combined

Trains, evaluates on val and test, writes the model folder, metrics and plots, and logs
the run (params, curves, metrics, figures, model) to MLflow, registering a new version.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import mlflow
import pandas as pd

from marketplace import paths
from marketplace.cli import run
from marketplace.config import load_params
from marketplace.data.labels import LabelMap
from marketplace.data.split import read_split
from marketplace.io import write_json
from marketplace.models.classifier import KINDS
from marketplace.models.embedding import EmbeddingSet
from marketplace.registry import example_from_catalogue, log_and_register
from marketplace.tracking import flatten, pipeline_parent_run, setup_tracking, standard_tags
from marketplace.training.metrics import write_run_reports
from marketplace.training.train import train_classifier

log = logging.getLogger("pipeline.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    kind = args.kind

    def body() -> None:
        params = load_params(args.params)
        listings = pd.read_parquet(paths.LISTINGS_FILE)
        splits = read_split(paths.SPLIT_DIR)
        label_map = LabelMap.load(paths.LABEL_MAP_FILE)
        images = EmbeddingSet.load(paths.IMAGE_EMBEDDINGS_FILE) if kind != "text" else None
        texts = EmbeddingSet.load(paths.TEXT_EMBEDDINGS_FILE) if kind != "vision" else None
        setup_tracking()
        with (
            pipeline_parent_run(),
            mlflow.start_run(run_name=kind, nested=True, tags=standard_tags(f"train_{kind}")),
        ):
            mlflow.log_params(
                flatten(
                    {
                        "train": params.train,
                        "embed_images": params.embed_images,
                        "embed_text": params.embed_text,
                        "clean_images": params.clean_images,
                        "split": params.split,
                    }
                )
            )

            def on_epoch(record: dict[str, float]) -> None:
                step = int(record["epoch"])
                mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=step)

            trained = train_classifier(
                kind,
                listings,
                splits,
                label_map,
                params.train,
                images=images,
                texts=texts,
                on_epoch=on_epoch,
            )
            model_dir = paths.MODELS_DIR / kind
            trained.package.save(model_dir)
            reports = write_run_reports(
                trained.history,
                trained.test_probabilities,
                trained.test_labels,
                label_map.categories,
                paths.PLOTS_DIR / kind,
                f"{kind} classifier",
            )
            mlflow.log_metrics(trained.metrics)
            for report in reports:
                mlflow.log_artifact(str(report), artifact_path="reports")
            mlflow.log_dict(trained.report, "reports/per_class.json")
            tags = standard_tags(f"train_{kind}")
            version = log_and_register(
                trained,
                model_dir,
                getattr(params.registry, kind),
                example_from_catalogue(kind, listings, paths.CLEAN_IMAGES_DIR),
                tags,
            )
            write_json(paths.METRICS_DIR / f"train_{kind}.json", trained.metrics)
            log.info(
                "%s: val acc %.4f, test acc %.4f (macro-F1 %.4f, top-3 %.4f); "
                "registered %s version %s",
                kind,
                trained.metrics["val_accuracy"],
                trained.metrics["test_accuracy"],
                trained.metrics["test_macro_f1"],
                trained.metrics["test_top3_accuracy"],
                getattr(params.registry, kind),
                version,
            )

    return run(body, f"pipeline.train.{kind}")


if __name__ == "__main__":
    raise SystemExit(main())
