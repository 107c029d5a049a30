"""Stage-output writers give identical bytes for identical content (DVC hashes the files)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from marketplace.io import write_npz
from marketplace.models.embedding import EmbeddingSet

ARRAYS = {
    "vectors": np.arange(12, dtype=np.float32).reshape(3, 4),
    "ids": np.array(["a", "b", "c"]),
    "spec": np.array('{"encoder": "x"}'),
}


def test_write_npz_loads_with_numpy_and_ignores_insertion_order(tmp_path: Path) -> None:
    write_npz(tmp_path / "one.npz", ARRAYS)
    write_npz(tmp_path / "two.npz", dict(reversed(ARRAYS.items())))
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "one.npz", allow_pickle=False) as loaded:
        assert sorted(loaded.files) == sorted(ARRAYS)
        for name, array in ARRAYS.items():
            np.testing.assert_array_equal(loaded[name], array)


def test_write_npz_headers_do_not_depend_on_time_or_python_release(tmp_path: Path) -> None:
    """Fixed timestamps, and sizes known up front: no zip64 headers, whose bytes
    np.savez's forced zip64 made differ between CPython 3.11.2 and 3.11.7."""
    write_npz(tmp_path / "a.npz", ARRAYS)
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        for entry in archive.infolist():
            assert entry.date_time == (1980, 1, 1, 0, 0, 0)
            assert entry.create_version == zipfile.DEFAULT_VERSION  # 20: not zip64
            assert entry.compress_type == zipfile.ZIP_STORED


def test_embedding_set_saves_the_same_bytes_twice(tmp_path: Path) -> None:
    embeddings = EmbeddingSet(
        np.array(["p1", "p2"]), np.ones((2, 3), np.float32), {"kind": "text", "dim": 3}
    )
    embeddings.save(tmp_path / "a.npz")
    embeddings.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = EmbeddingSet.load(tmp_path / "a.npz")
    assert loaded.spec == embeddings.spec
    np.testing.assert_array_equal(loaded.vectors, embeddings.vectors)
