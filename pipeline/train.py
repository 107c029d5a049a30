"""DVC stages train_vision / train_text / train_combined: a head on cached embeddings.

    python -m pipeline.train --kind combined

Trains, evaluates on val and test, writes the model folder, metrics and plots, and logs
the run (params, curves, metrics, figures, model) to MLflow, registering a new version.
With ``train.<kind>.warm_epochs`` > 0 the head starts from the production version's
weights when they fit (``training.train.warm_start_mismatch``).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import pandas as pd

from marketplace.cli import exit_process, run
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_json
from marketplace.data.labels import LabelMap
from marketplace.data.split import read_split
from marketplace.features.embedding import EmbeddingSet
from marketplace.mlops.model_card import card_inputs
from marketplace.mlops.reference import build_reference
from marketplace.mlops.registry import (
    download_package,
    example_from_catalogue,
    log_trained,
    training_run,
)
from marketplace.models.classifier import KINDS, ClassifierPackage
from marketplace.training.distributed import fit_function
from marketplace.training.inputs import TextFeatures
from marketplace.training.metrics import write_run_reports
from marketplace.training.train import WarmStart, train_classifier

log = logging.getLogger("pipeline.train")
PRODUCTION_ALIAS = "production"  # warm starts come from the version the API serves


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
        features = TextFeatures.load(paths.TFIDF_FILE) if kind != "vision" else None
        name = getattr(params.registry, kind)
        with training_run(kind, params) as on_epoch, tempfile.TemporaryDirectory() as tmp:
            warm = None
            if getattr(params.train, kind).warm_epochs > 0:
                found = download_package(name, PRODUCTION_ALIAS, Path(tmp))
                if found is not None:
                    warm = WarmStart(ClassifierPackage.load(found[0]), source=found[1])
            trained = train_classifier(
                kind,
                listings,
                splits,
                label_map,
                params.train,
                images=images,
                texts=texts,
                text_features=features,
                images_dir=paths.CLEAN_IMAGES_DIR,
                on_epoch=on_epoch,
                fit_function=fit_function(params.compute),  # fine-tuning: here or on Ray
                warm_start=warm,
            )
            model_dir = paths.MODELS_DIR / kind
            trained.package.save(model_dir)
            reports = write_run_reports(
                trained.history,
                trained.test_probabilities,
                trained.test_labels,
                trained.package.label_map.categories,
                paths.PLOTS_DIR / kind,
                f"{kind} classifier",
            )
            version = log_trained(
                trained,
                model_dir,
                reports,
                name,
                example_from_catalogue(kind, listings, paths.CLEAN_IMAGES_DIR),
                f"train_{kind}",
                reference=build_reference(
                    kind,
                    listings,
                    splits["train"],
                    list(label_map.categories),
                    images=images,
                    texts=texts,
                    val_by_kind=trained.val_by_kind,
                    size=params.monitor.reference_size,
                    seed=params.train.seed,
                ),
                card=card_inputs(kind, params, listings, splits),
            )
        write_json(paths.METRICS_DIR / f"train_{kind}.json", trained.metrics)
        m = trained.metrics
        log.info(
            "%s (%s): val acc %.4f, test acc %.4f (macro-F1 %.4f, top-3 %.4f); "
            "registered %s version %s",
            kind,
            trained.warm_start,
            m["val_accuracy"],
            m["test_accuracy"],
            m["test_macro_f1"],
            m["test_top3_accuracy"],
            name,
            version,
        )

    return run(body, f"pipeline.train.{kind}")


if __name__ == "__main__":
    exit_process(main())
