"""Benchmark optional vision fine-tuning on the real export: time and test accuracy.

Runs in a project where the pipeline has already run on the real data (cleaned photos,
split, cached image embeddings), e.g. the scratch project ``bench_training.py`` builds:

    python bench/bench_finetune.py --project /tmp/scratch/project --blocks 0 1 2

For each ``--blocks`` value it trains the vision classifier as ``train_vision`` does with
``train.vision.finetune_blocks`` set to it (0 = the frozen-encoder default) and records
the wall time and val/test figures. Every choice (the epoch kept) is made on val; the
test split is only reported. Writes ``bench/results/finetune.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marketplace.core.config import load_params  # noqa: E402
from marketplace.data.labels import LabelMap  # noqa: E402
from marketplace.data.split import read_split  # noqa: E402
from marketplace.features.embedding import EmbeddingSet  # noqa: E402
from marketplace.training.train import train_classifier  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override train.vision.finetune_epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/finetune.json")
    args = parser.parse_args()
    project = args.project
    params = load_params(ROOT / "params.yaml").train
    listings = pd.read_parquet(project / "outputs/clean/listings.parquet")
    splits = read_split(project / "outputs/split")
    label_map = LabelMap.load(project / "outputs/clean/label_map.json")
    images = EmbeddingSet.load(project / "outputs/embeddings/images.npz")
    results = []
    for blocks in args.blocks:
        vision = params.vision.model_copy(update={"finetune_blocks": blocks})
        if args.epochs:
            vision = vision.model_copy(update={"finetune_epochs": args.epochs})
        started = time.perf_counter()

        def on_epoch(record: dict[str, float], started: float = started) -> None:
            print(
                f"  epoch {record['epoch']:.0f}: train loss {record['train_loss']:.4f}, "
                f"val acc {record['val_accuracy']:.4f} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )

        print(f"finetune_blocks={blocks}", flush=True)
        trained = train_classifier(
            "vision",
            listings,
            splits,
            label_map,
            params.model_copy(update={"vision": vision}),
            images=images,
            images_dir=project / "outputs/images",
            on_epoch=on_epoch if blocks else None,
        )
        seconds = time.perf_counter() - started
        m = trained.metrics
        row = {
            "finetune_blocks": blocks,
            "finetune_epochs": vision.finetune_epochs,
            "augment": vision.augment,
            "seconds": round(seconds, 1),
            "head_best_epoch": m["best_epoch"],
            "finetune_best_epoch": m.get("finetune_best_epoch"),
            "epochs_total": len(trained.history),
            **{k: round(m[k], 4) for k in m if k.startswith(("val_", "test_")) and "_n" not in k},
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"threads": torch.get_num_threads(), "runs": results}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
