"""DVC stage embed_images: every cleaned canvas -> one frozen image-encoder embedding.

Runs the encoder once; the heads train on the cached vectors. Incremental: canvases whose
bytes and encoder spec are unchanged since the last run keep their vectors (the out is
``persist: true``); ``--cold`` recomputes everything.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from marketplace.cli import exit_process, run
from marketplace.compute.ray import runner
from marketplace.core import paths
from marketplace.core.config import load_params
from marketplace.core.io import write_json
from marketplace.features.embedding import stream_catalogue_images

log = logging.getLogger("pipeline.embed_images")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=paths.CLEAN_IMAGES_DIR)
    parser.add_argument("--out", type=Path, default=paths.IMAGE_EMBEDDINGS_FILE)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS_DIR / "embed_images.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--cold", action="store_true", help="reuse nothing from the last run")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_params(args.params)
        started = time.perf_counter()
        embeddings = stream_catalogue_images(
            args.images,
            params.embed_images,
            canvas_size=params.clean_images.size,
            progress=not args.no_progress,
            runner=runner(params.compute),
            previous=None if args.cold else args.out,
        )
        dim = embeddings.save(args.out)  # written as the batches come
        seconds = time.perf_counter() - started
        count = len(embeddings.ids)
        write_json(
            args.metrics,
            {
                "images": count,
                "dim": dim,
                "reused": embeddings.reused,
                "computed": embeddings.computed,
            },
        )
        log.info(
            "embedded %d images (%d-d, %s; %d reused, %d computed) in %.1f s",
            count,
            dim,
            params.embed_images.encoder,
            embeddings.reused,
            embeddings.computed,
            seconds,
        )

    return run(body, "pipeline.embed_images")


if __name__ == "__main__":
    exit_process(main())
