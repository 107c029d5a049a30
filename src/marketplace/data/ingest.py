"""Import a real marketplace export into ``data/`` and record it with DVC.

``data/`` holds the raw export only and is never edited in place: an import validates
the new export first (refusing a malformed one with a clear message), builds the new
``data/`` beside the old one and swaps it in, then ``dvc add data`` updates ``data.dvc``.
The previous export stays in the DVC cache, so ``git checkout`` + ``dvc checkout`` of
an older ``data.dvc`` brings it back.

The command (``marketplace ingest``, or ``python -m marketplace.data.ingest``)::

    marketplace ingest --from path/to/export        # a folder
    marketplace ingest --from path/to/export.zip    # or a zip of one
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from marketplace.cli import exit_process, run
from marketplace.core.io import replace_dir
from marketplace.core.paths import DATA_DIR
from marketplace.data.export import (
    ExportSummary,
    MalformedExportError,
    find_export_root,
    validate_export,
)
from marketplace.data.schema import IMAGES_DIR, IMAGES_FILE, PRODUCTS_FILE

log = logging.getLogger(__name__)

EXPORT_ENTRIES = (PRODUCTS_FILE, IMAGES_FILE, IMAGES_DIR)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip, refusing members that would land outside ``dest`` (zip-slip)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                parts = PurePosixPath(member.filename).parts
                if member.filename.startswith(("/", "\\")) or ".." in parts:
                    raise MalformedExportError(
                        f"{archive}: unsafe path in archive: {member.filename!r}"
                    )
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise MalformedExportError(f"{archive}: not a valid zip archive ({exc})") from None


def ingest_export(source: Path, data_dir: Path) -> ExportSummary:
    """Validate the export at ``source`` (folder or .zip) and make it the new ``data_dir``.

    Only the export's own entries (Products.csv, Images.csv, images/) are copied; anything
    else in the source is listed in the log and left behind.
    """
    source = source.resolve()
    if not source.exists():
        raise MalformedExportError(f"{source} does not exist")
    if source == data_dir.resolve():
        raise MalformedExportError(f"{source} is already the project's data folder")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir.parent, prefix=".ingest-") as tmp:
        tmp_path = Path(tmp)
        if source.is_file():
            if not zipfile.is_zipfile(source):
                raise MalformedExportError(f"{source}: expected a folder or a .zip archive")
            safe_extract(source, tmp_path / "unzipped")
            root = find_export_root(tmp_path / "unzipped")
        else:
            root = find_export_root(source)
        summary = validate_export(root)
        extra = sorted(p.name for p in root.iterdir() if p.name not in EXPORT_ENTRIES)
        if extra:
            log.info("not imported (not part of an export): %s", ", ".join(extra))
        staged = tmp_path / "data"
        staged.mkdir()
        shutil.copy2(root / PRODUCTS_FILE, staged / PRODUCTS_FILE)
        shutil.copy2(root / IMAGES_FILE, staged / IMAGES_FILE)
        shutil.copytree(root / IMAGES_DIR, staged / IMAGES_DIR)
        replace_dir(staged, data_dir)
    return ExportSummary(data_dir, summary.products, summary.image_rows, summary.image_files)


def dvc_track(path: Path) -> None:
    """``dvc add`` the folder so its ``.dvc`` file records the new content hash."""
    result = subprocess.run(
        ["dvc", "add", "--quiet", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"dvc add {path} failed: {result.stderr.strip() or result.stdout}")


# The command line ------------------------------------------------------------


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

    return run(body, "marketplace.data.ingest")


if __name__ == "__main__":
    exit_process(main())
