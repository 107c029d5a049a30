"""Small, deterministic writers for stage outputs (so reruns produce identical bytes)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # every .npz entry's timestamp


def write_json(path: Path, data: Any) -> None:
    """Pretty, key-ordered UTF-8 JSON with a trailing newline; creates the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=_jsonable)
    path.write_text(text + "\n", encoding="utf-8")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """CSV without the pandas index, ``\\n`` line endings; creates the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\n")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Arrays in ``np.savez``'s format (``np.load`` reads them; no pickles), byte-identical
    for identical arrays: fixed entry timestamps, entries in name order, uncompressed, and
    each entry written with its size known, so the bytes do not depend on the Python patch
    release (``np.savez`` forces zip64 headers, which CPython 3.11.4 changed). Creates the
    parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(arrays[name]), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            entry.external_attr = 0o600 << 16  # -rw-------, as np.savez writes
            archive.writestr(entry, buffer.getbuffer())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def replace_dir(new: Path, target: Path) -> None:
    """Make ``new`` the folder at ``target``, replacing what was there.

    The old folder is moved aside first and deleted only once ``new`` is in place; if the
    swap fails half-way, the old folder is put back. Both paths must be on one file system.
    """
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    had_old = target.exists() or target.is_symlink()
    if had_old:
        target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        if had_old:
            old.rename(target)
        raise
    if had_old:
        shutil.rmtree(old)
