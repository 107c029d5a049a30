"""Stage-output writers give identical bytes for identical content (DVC hashes the files),
whether an array is written whole or streamed in row blocks (the Ray path)."""

from __future__ import annotations

import itertools
import zipfile
from pathlib import Path

import numpy as np
import pytest

from marketplace.core.io import RowBlocks, write_npz
from marketplace.features.embedding import EmbeddingSet, EmbeddingStream

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


def _blocks(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    edges = np.cumsum([0, *sizes])
    return [array[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("sizes", [[7], [3, 0, 4], [1] * 7, [2, 5]])
def test_row_blocks_write_the_bytes_of_the_whole_array(tmp_path: Path, sizes: list[int]) -> None:
    vectors = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    write_npz(tmp_path / "whole.npz", {**ARRAYS, "vectors": vectors})
    streamed = RowBlocks(7, iter(_blocks(vectors, sizes)))  # an iterator: read once
    write_npz(tmp_path / "streamed.npz", {**ARRAYS, "vectors": streamed})
    assert (tmp_path / "streamed.npz").read_bytes() == (tmp_path / "whole.npz").read_bytes()
    assert not list(tmp_path.glob(".*"))  # no partial file left behind


def test_an_embedding_stream_saves_what_the_embedding_set_saves(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ids, vectors = np.array(["a", "bb", "c", "d"]), rng.normal(size=(4, 3)).astype(np.float32)
    whole = EmbeddingSet(ids, vectors, {"dim": 3, "encoder": "x"})
    whole.save(tmp_path / "whole.npz")
    blocks = iter(_blocks(vectors, [3, 1]))
    stream = EmbeddingStream(ids, blocks, lambda d: {"dim": d, "encoder": "x"})
    assert stream.save(tmp_path / "stream.npz") == 3
    assert (tmp_path / "stream.npz").read_bytes() == (tmp_path / "whole.npz").read_bytes()
    empty = EmbeddingStream(ids[:0], iter([vectors[:0]]), lambda d: {"dim": d})
    empty.save(tmp_path / "empty.npz")
    assert EmbeddingSet.load(tmp_path / "empty.npz").vectors.shape == (0, 3)


@pytest.mark.parametrize(
    ("blocks", "error"),
    [
        ([np.zeros((2, 4), np.float32)], "2 rows, not the 3 announced"),
        ([np.zeros((2, 4), np.float32)] * 2, "more than the 3 rows announced"),
        ([np.zeros((2, 4), np.float32), np.zeros((1, 5), np.float32)], "float32 \\(5,\\) rows"),
        ([np.zeros((2, 4), np.float32), np.zeros((1, 4))], "float64"),
        ([], "no row blocks"),
    ],
)
def test_bad_row_blocks_are_refused_and_leave_the_old_file(
    tmp_path: Path, blocks: list[np.ndarray], error: str
) -> None:
    path = tmp_path / "out.npz"
    write_npz(path, ARRAYS)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=f"^vectors: .*{error}"):
        write_npz(path, {**ARRAYS, "vectors": RowBlocks(3, blocks)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]
