"""Small, deterministic writers for stage outputs (so reruns produce identical bytes)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RowBlocks:
    """An array that ``write_npz`` writes block of rows by block of rows, holding one block
    at a time (a million 1280-d vectors are 4.8 GiB): ``rows`` rows in all, each block
    ``[k, *shape]`` of one dtype and trailing shape, in order."""

    rows: int
    blocks: Iterable[np.ndarray]


def write_npz(path: Path, arrays: Mapping[str, np.ndarray | RowBlocks]) -> None:
    """Arrays in ``np.savez``'s format (``np.load`` reads them; no pickles), byte-identical
    for identical arrays: fixed entry timestamps, entries in name order, uncompressed, and
    each entry written with its size known, so the bytes do not depend on the Python patch
    release (``np.savez`` forces zip64 headers, which CPython 3.11.4 changed). A
    ``RowBlocks`` entry is streamed into the archive and gives the same bytes as the whole
    array would. Written beside ``path`` and moved there once complete (a failure leaves
    what was there); creates the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with zipfile.ZipFile(
            partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True
        ) as archive:
            for name in sorted(arrays):
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
                entry.external_attr = 0o600 << 16  # -rw-------, as np.savez writes
                value = arrays[name]
                if isinstance(value, RowBlocks):
                    _write_rows(archive, entry, value)
                    continue
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
                archive.writestr(entry, buffer.getbuffer())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_rows(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, value: RowBlocks) -> None:
    """One ``.npy`` entry from row blocks: the header (shape and dtype from the first block),
    then each block's bytes. The entry's size is set before it is opened, as ``writestr``
    does, so its headers (zip64 or not) are those of the whole array written at once."""
    name = entry.filename.removesuffix(".npy")
    blocks = iter(value.blocks)
    first = next(blocks, None)
    if first is None:
        raise ValueError(f"{name}: no row blocks (an empty array is one block of 0 rows)")
    first = np.asarray(first)
    if first.ndim == 0 or first.dtype.hasobject:
        raise ValueError(f"{name}: row blocks must be arrays of rows, not {first.dtype}")
    dtype, shape = first.dtype, first.shape[1:]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": (value.rows, *shape),
        },
    )
    row_bytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    entry.file_size = len(header.getbuffer()) + value.rows * row_bytes
    written = 0
    with archive.open(entry, "w") as out:
        out.write(header.getbuffer())
        for block in itertools.chain([first], blocks):
            block = np.asarray(block)
            if block.dtype != dtype or block.shape[1:] != shape:
                raise ValueError(
                    f"{name}: a block of {block.dtype} {block.shape[1:]} rows after "
                    f"{dtype} {shape} ones"
                )
            written += len(block)
            if written > value.rows:
                raise ValueError(f"{name}: more than the {value.rows} rows announced")
            out.write(np.ascontiguousarray(block).data)
    if written != value.rows:
        raise ValueError(f"{name}: {written} rows, not the {value.rows} announced")


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


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes: the key an incremental stage reuses a result by."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def text_sha256(text: str) -> str:
    """Hex SHA-256 of a text's UTF-8 bytes (the key of a text's embedding)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_json_or_none(path: Path) -> Any | None:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable (an incremental
    stage then starts cold rather than trusting a half-written record)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
