"""DVC stage tfidf: listing texts -> hashed TF-IDF rows per split, IDF fitted on train.

The text and combined models both read these rows, so the texts are hashed once per
change of texts, split or ``tfidf`` params, not once per head training run.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from marketplace.cli import exit_process, run
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_json
from marketplace.data.split import read_split
from marketplace.features.tfidf import TfidfConfig
from marketplace.training.inputs import build_text_features, products_table

log = logging.getLogger("pipeline.tfidf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=Path, default=paths.LISTINGS_FILE)
    parser.add_argument("--split", type=Path, default=paths.SPLIT_DIR)
    parser.add_argument("--out", type=Path, default=paths.TFIDF_FILE)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS_DIR / "tfidf.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_params(args.params).tfidf
        started = time.perf_counter()
        features = build_text_features(
            products_table(pd.read_parquet(args.listings)),
            TfidfConfig(params.word_buckets, params.char_buckets),
            read_split(args.split),
        )
        seconds = time.perf_counter() - started
        features.save(args.out)
        metrics = {
            "features": features.tfidf.config.n_features,
            **{f"{name}_rows": rows.shape[0] for name, rows in features.rows.items()},
            "mean_nonzeros_per_row": round(
                sum(r.nnz for r in features.rows.values())
                / max(sum(r.shape[0] for r in features.rows.values()), 1),
                1,
            ),
        }
        write_json(args.metrics, metrics)
        log.info("hashed TF-IDF of %s in %.1f s", metrics, seconds)

    return run(body, "pipeline.tfidf")


if __name__ == "__main__":
    exit_process(main())
