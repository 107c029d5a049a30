"""DVC stage thumbnails: one small photo per listing, for the search page (from the registry).

    python -m pipeline.thumbnails

Reads the cleaned photos (``outputs/images``) and writes ``outputs/thumbnails/``
(``thumbnails.bin`` + ``thumbnails.json``, see ``marketplace.search.thumbnails``) with the
``index.thumbnail_*`` params; the ``index`` stage copies them into the index folder, which
is logged into the registered model version. A stage of its own so that a head-only
change, which reruns ``index``, does not re-encode 5,390 photos (about a minute on two
cores, twice the rest of such a rerun); ``index.thumbnail_size: 0`` leaves the folder
empty and the index without photos. Incremental: a listing whose photo (the canvas's
SHA-256, ``keys.json``) and params are unchanged keeps its thumbnail (the out is
``persist: true``); ``--cold`` encodes everything again.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import pandas as pd

from marketplace.cli import exit_process, run
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_json
from marketplace.search.thumbnails import (
    catalogue_thumbnails,
    product_photos,
    reusable_thumbnails,
    save_thumbnail_keys,
    thumbnail_metrics,
)

log = logging.getLogger("pipeline.thumbnails")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=Path, default=paths.LISTINGS_FILE)
    parser.add_argument("--images", type=Path, default=paths.CLEAN_IMAGES_DIR)
    parser.add_argument("--out", type=Path, default=paths.THUMBNAILS_DIR)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS_DIR / "thumbnails.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--cold", action="store_true", help="reuse nothing from the last run")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_params(args.params).index
        products = product_photos(pd.read_parquet(args.listings))
        started = time.perf_counter()
        reuse = {} if args.cold else reusable_thumbnails(args.out, params)
        keys: dict[str, str] = {}
        thumbnails = catalogue_thumbnails(products, args.images, params, keys=keys, reuse=reuse)
        if args.out.exists():  # nothing of the last run survives but what was reused
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        reused = 0
        if thumbnails is not None:
            thumbnails.save(args.out)
            save_thumbnail_keys(args.out, params, keys)
            reused = sum(digest in reuse for digest in keys.values())
        count = 0 if thumbnails is None else len(thumbnails)
        write_json(
            args.metrics,
            {
                "products": float(len(products)),
                **thumbnail_metrics(thumbnails),
                "reused": reused,
                "computed": count - reused,
            },
        )
        log.info(
            "%s thumbnails of %d products (%d reused, %d computed), %.1f MB, in %.1f s",
            count,
            len(products),
            reused,
            count - reused,
            0 if thumbnails is None else len(thumbnails.data) / 1e6,
            time.perf_counter() - started,
        )

    return run(body, "pipeline.thumbnails")


if __name__ == "__main__":
    exit_process(main())
