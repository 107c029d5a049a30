"""Warm-started heads against cold ones, on a project built from the real export.

For each seed: the combined head trained cold on 94 % of the products (a seeded draw by id:
the "previous" build), then on all of them cold and warm-started from the previous one for
1, 2 and 3 epochs (``train.combined.warm_epochs``); val and test accuracy per query kind and
the fit time of each. Then each head's fit time per epoch and training product (the rates
the 1M projection in BENCHMARKS.md multiplies).

    python bench/bench_warm_start.py --project <a project after dvc repro of the real export>

Writes ``bench/results/warm_start.json`` and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_living import cpu_name  # noqa: E402

from marketplace.core import paths  # noqa: E402
from marketplace.core.config import load_params  # noqa: E402
from marketplace.data.labels import LabelMap  # noqa: E402
from marketplace.data.split import read_split  # noqa: E402
from marketplace.features.embedding import EmbeddingSet  # noqa: E402
from marketplace.training.inputs import (  # noqa: E402
    TextFeatures,
    build_text_features,
    products_table,
)
from marketplace.training.train import TrainedModel, WarmStart, train_classifier  # noqa: E402

KEPT_PERCENT = 94  # the previous build holds this share of the products
WARM_EPOCHS = (1, 2, 3)
KINDS = ("", "text_", "image_", "image_text_")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/warm_start.json")
    args = parser.parse_args()
    out = args.out.resolve()
    os.chdir(args.project)
    params = load_params(ROOT / "params.yaml")
    listings = pd.read_parquet(paths.LISTINGS_FILE)
    splits = read_split(paths.SPLIT_DIR)
    label_map = LabelMap.load(paths.LABEL_MAP_FILE)
    images = EmbeddingSet.load(paths.IMAGE_EMBEDDINGS_FILE)
    texts = EmbeddingSet.load(paths.TEXT_EMBEDDINGS_FILE)
    features = TextFeatures.load(paths.TFIDF_FILE)
    older = {
        name: [i for i in ids if zlib.crc32(i.encode()) % 100 < KEPT_PERCENT]
        for name, ids in splits.items()
    }
    # the previous build fitted its TF-IDF weights on its own train split
    older_features = build_text_features(products_table(listings), features.tfidf.config, older)

    def train(kind: str, seed: int, split, feats, warm=None, **head) -> tuple[TrainedModel, float]:
        section = getattr(params.train, kind).model_copy(update=head)
        config = params.train.model_copy(update={"seed": seed, kind: section})
        started = time.perf_counter()
        trained = train_classifier(
            kind,
            listings,
            split,
            label_map,
            config,
            images=images,
            texts=texts,
            text_features=feats,
            warm_start=warm,
        )
        return trained, time.perf_counter() - started

    def row(label: str, seed: int, trained: TrainedModel, seconds: float) -> dict:
        m = trained.metrics
        return {
            "run": label,
            "seed": seed,
            "fit_s": round(seconds, 2),
            "epochs": len(trained.history),
            "best_epoch": m["best_epoch"],
            "warm_start": trained.warm_start,
            **{
                f"{part}_{k}accuracy": round(m[f"{part}_{k}accuracy"], 4)
                for part in ("val", "test")
                for k in KINDS
            },
        }

    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        previous, seconds = train("combined", seed, older, older_features)
        runs.append(row(f"previous ({KEPT_PERCENT} %), cold", seed, previous, seconds))
        runs.append(row("all, cold", seed, *train("combined", seed, splits, features)))
        for epochs in WARM_EPOCHS:
            warm = WarmStart(previous.package, "previous")
            trained, seconds = train("combined", seed, splits, features, warm, warm_epochs=epochs)
            runs.append(row(f"all, warm {epochs}", seed, trained, seconds))
        print(json.dumps(runs[-5:]), flush=True)

    rates = {}
    for kind in ("vision", "text", "combined"):
        trained, seconds = train(kind, params.train.seed, splits, features)
        rows = len(splits["train"])
        if kind == "vision":  # the vision head trains on each embedded photo of them
            in_train = listings["product_id"].isin(set(splits["train"]))
            rows = int((in_train & listings["image_id"].isin(set(images.ids))).sum())
        rates[kind] = {
            "fit_s": round(seconds, 2),
            "epochs": len(trained.history),
            "train_rows": rows,
            "us_per_row_epoch": round(seconds / len(trained.history) / rows * 1e6, 1),
        }

    summary = {}
    for label in sorted({r["run"] for r in runs}):
        chosen = [r for r in runs if r["run"] == label]
        summary[label] = {
            key: round(statistics.mean(r[key] for r in chosen), 4)
            for key in (
                "fit_s",
                "epochs",
                "val_accuracy",
                "test_accuracy",
                *(f"test_{k}accuracy" for k in KINDS[1:]),
            )
        }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "project": str(args.project),
        "products": {name: [len(ids), len(older[name])] for name, ids in splits.items()},
        "runs": runs,
        "mean_over_seeds": summary,
        "head_rates": rates,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| run | fit s | epochs | val acc | test acc | test text / photo / both |")
    print("|---|---|---|---|---|---|")
    for label, s in summary.items():
        print(
            f"| {label} | {s['fit_s']:.1f} | {s['epochs']:.1f} | {s['val_accuracy']:.4f} | "
            f"{s['test_accuracy']:.4f} | {s['test_text_accuracy']:.4f} / "
            f"{s['test_image_accuracy']:.4f} / {s['test_image_text_accuracy']:.4f} |"
        )
    print(json.dumps(rates, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
