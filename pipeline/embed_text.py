"""DVC stage embed_text: every product's title + description -> one text embedding.

Incremental: texts unchanged since the last run (same encoder spec) keep their vectors
(the out is ``persist: true``); ``--cold`` recomputes everything.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from marketplace.cli import exit_process, run
from marketplace.compute.ray import runner
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_json
from marketplace.features.embedding import stream_catalogue_texts

log = logging.getLogger("pipeline.embed_text")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=Path, default=paths.LISTINGS_FILE)
    parser.add_argument("--out", type=Path, default=paths.TEXT_EMBEDDINGS_FILE)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS_DIR / "embed_text.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--cold", action="store_true", help="reuse nothing from the last run")
    args = parser.parse_args(argv)

    def body() -> None:
        all_params = load_params(args.params)
        params = all_params.embed_text
        listings = pd.read_parquet(args.listings, columns=["product_id", "title", "description"])
        started = time.perf_counter()
        embeddings = stream_catalogue_texts(
            listings,
            params,
            progress=not args.no_progress,
            runner=runner(all_params.compute),
            previous=None if args.cold else args.out,
        )
        dim = embeddings.save(args.out)  # written as the batches come
        seconds = time.perf_counter() - started
        count = len(embeddings.ids)
        write_json(
            args.metrics,
            {
                "products": count,
                "dim": dim,
                "reused": embeddings.reused,
                "computed": embeddings.computed,
            },
        )
        log.info(
            "embedded %d texts (%d-d, %s; %d reused, %d computed) in %.1f s",
            count,
            dim,
            params.encoder,
            embeddings.reused,
            embeddings.computed,
            seconds,
        )

    return run(body, "pipeline.embed_text")


if __name__ == "__main__":
    exit_process(main())
