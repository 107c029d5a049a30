"""Import a real marketplace export into data/ and update data.dvc.

python -m pipeline.ingest --from path/to/export        # a folder
python -m pipeline.ingest --from path/to/export.zip    # or a zip of one
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from marketplace.cli import exit_process, run
from marketplace.data.ingest import dvc_track, ingest_export
from marketplace.paths import DATA_DIR

log = logging.getLogger("pipeline.ingest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        type=Path,
        help="export folder or .zip with Products.csv, Images.csv, images/",
    )
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="raw data folder (data/)")
    parser.add_argument("--no-dvc", action="store_true", help="copy only; skip `dvc add`")
    args = parser.parse_args(argv)

    def body() -> None:
        summary = ingest_export(args.source, args.data)
        log.info(
            "imported %d products, %d image rows, %d image files into %s",
            summary.products,
            summary.image_rows,
            summary.image_files,
            args.data,
        )
        if not args.no_dvc:
            dvc_track(args.data)
            log.info("updated %s.dvc: commit it with git to record this export", args.data)

    return run(body, "pipeline.ingest")


if __name__ == "__main__":
    exit_process(main())
