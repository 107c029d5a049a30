"""DVC stage embed_images: every cleaned canvas -> one frozen image-encoder embedding.

Runs the encoder once; the heads train on the cached vectors.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from marketplace import paths
from marketplace.cli import exit_process, run
from marketplace.config import load_params
from marketplace.io import write_json
from marketplace.models.embedding import stream_catalogue_images
from marketplace.ray_compute import runner

log = logging.getLogger("pipeline.embed_images")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=paths.CLEAN_IMAGES_DIR)
    parser.add_argument("--out", type=Path, default=paths.IMAGE_EMBEDDINGS_FILE)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS_DIR / "embed_images.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
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
        )
        dim = embeddings.save(args.out)  # written as the batches come
        seconds = time.perf_counter() - started
        count = len(embeddings.ids)
        write_json(args.metrics, {"images": count, "dim": dim})
        log.info(
            "embedded %d images (%d-d, %s) in %.1f s: %.1f img/s",
            count,
            dim,
            params.embed_images.encoder,
            seconds,
            count / max(seconds, 1e-9),
        )

    return run(body, "pipeline.embed_images")


if __name__ == "__main__":
    exit_process(main())
