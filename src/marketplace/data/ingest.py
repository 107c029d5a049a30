"""Import a real marketplace export into ``data/`` and record it with DVC.

``data/`` holds the raw export only and is never edited in place: an import validates
the new export first (refusing a malformed one with a clear message), builds the new
``data/`` beside the old one and swaps it in, then ``dvc add data`` updates ``data.dvc``.
The previous export stays in the DVC cache, so ``git checkout`` + ``dvc checkout`` of
an older ``data.dvc`` brings it back.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from marketplace.data.export import (
    ExportSummary,
    MalformedExportError,
    find_export_root,
    validate_export,
)
from marketplace.data.schema import IMAGES_DIR, IMAGES_FILE, PRODUCTS_FILE
from marketplace.io import replace_dir

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
