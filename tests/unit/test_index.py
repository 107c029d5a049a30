"""The FAISS product index: query spaces, filters, factories, and refusing a foreign index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marketplace.search.build import (
    build_faiss,
    evaluate_index,
    precision_at_k,
    precompute_neighbours,
    query_sample,
    save_index,
    tune_text_weight,
    with_text_weight,
)
from marketplace.search.index import (
    IndexMismatchError,
    ProductIndex,
    query_vector,
)
from tests.helpers.synthetic import HALF, toy_index


def test_query_vectors_live_in_their_half() -> None:
    t, i = np.ones(HALF, np.float32), np.full(HALF, 2, np.float32)
    assert np.all(query_vector(t, None, HALF)[HALF:] == 0)
    assert np.all(query_vector(None, i, HALF)[:HALF] == 0)
    both = query_vector(t, i, HALF)
    assert np.allclose(both, np.concatenate([t, i]) / 2)
    with pytest.raises(ValueError, match="a text, a photo, or both"):
        query_vector(None, None, HALF)
    weighted = query_vector(t, i, HALF, text_weight=0.8)
    assert np.allclose(weighted, np.concatenate([0.8 * t, 0.2 * i]))
    assert np.allclose(query_vector(t, None, HALF, text_weight=0.8)[:HALF], t)  # alone: 1


def test_product_query_weights_only_products_with_a_photo() -> None:
    index = with_text_weight(toy_index(), 0.7)
    with_photo, without = index.vector(1), index.vector(0)  # every fourth has no photo
    assert np.allclose(index.product_query(1)[:HALF], 0.7 * with_photo[:HALF])
    assert np.allclose(index.product_query(1)[HALF:], 0.3 * with_photo[HALF:])
    assert np.allclose(index.product_query(0), without)


def test_scores_are_per_modality_cosines() -> None:
    index = toy_index()
    stored = index.vector(1)
    hits = index.search(query_vector(stored[:HALF], None, HALF), 1)
    assert hits[0] == (1, pytest.approx(1.0, abs=1e-5))  # text query: cosine with itself
    hits = index.search(index.product_query(1), 1)
    assert hits[0] == (1, pytest.approx(1.0, abs=1e-5))  # both halves: mean of two cosines


def test_filters_and_exclusion() -> None:
    index = toy_index()
    query = index.product_query(5)
    hits = index.search(query, 10, exclude=5)
    assert len(hits) == 10 and 5 not in [p for p, _ in hits]
    mask = index.allowed(category="c1", min_price=10, max_price=40)
    for position, _ in index.search(query, 10, mask=mask):
        record = index.record(position)
        assert record["category"] == "c1" and 10 <= record["price"] <= 40
    only_photos = index.allowed(require_image=True)
    assert all(index.record(p)["image_id"] for p, _ in index.search(query, 30, mask=only_photos))
    assert index.search(query, 5, mask=index.allowed(category="nope")) == []


@pytest.mark.parametrize(
    "factory", ["Flat", "IVF4,Flat", "HNSW8", "IVF4,SQ8", "IVF4,PQ8x4", "OPQ8,IVF4,PQ8x4"]
)
def test_every_factory_finds_the_same_category(factory: str) -> None:
    index = toy_index(factory, n=300 if factory.startswith("OPQ") else 60)  # OPQ: 256 codes
    precision, used = precision_at_k(index, list(range(60)), 5, "text")
    assert used == 60 and precision > 0.95
    precision, used = precision_at_k(index, list(range(60)), 5, "image")
    assert used == 45 and precision > 0.95  # products without a photo make no image query


def test_ivf_needs_enough_vectors() -> None:
    with pytest.raises(ValueError, match="64 lists for only 10 vectors"):
        build_faiss(np.ones((10, 4), np.float32), "IVF64,Flat")


def test_round_trip_and_refusing_another_model(tmp_path: Path) -> None:
    index = toy_index()
    save_index(index, tmp_path)
    loaded = ProductIndex.load(tmp_path, model_version="3", package_sha="abc")
    assert len(loaded) == len(index) and loaded.record(1) == index.record(1)
    assert np.allclose(loaded.vector(7), index.vector(7))
    with pytest.raises(IndexMismatchError, match="version 3, not version 4"):
        ProductIndex.load(tmp_path, model_version="4")
    with pytest.raises(IndexMismatchError, match="different classifier package"):
        ProductIndex.load(tmp_path, package_sha="def")


@pytest.mark.parametrize("factory", ["Flat", "HNSW8", "IVF4,SQ8"])
def test_precomputed_neighbours_are_the_search_results(factory: str, tmp_path: Path) -> None:
    index = precompute_neighbours(with_text_weight(toy_index(factory), 0.6), 12)
    assert index.meta.neighbours == 12
    for position in range(len(index)):
        searched = index.search(index.product_query(position), 12, exclude=position)
        stored = index.neighbours(position, 12)
        assert stored is not None and position not in [p for p, _ in stored]
        assert [p for p, _ in stored] == [p for p, _ in searched]
        assert np.allclose([s for _, s in stored], [s for _, s in searched], atol=1e-5)
    assert index.neighbours(0, 13) is None  # deeper than precomputed: the caller searches
    save_index(index, tmp_path)
    loaded = ProductIndex.load(tmp_path)
    assert loaded.meta.text_weight == 0.6
    assert loaded.neighbours(5, 4) == index.neighbours(5, 4)


def test_an_index_without_the_newer_fields_still_loads(tmp_path: Path) -> None:
    index = toy_index()
    save_index(index, tmp_path)
    raw = json.loads((tmp_path / "index.json").read_text())
    del raw["text_weight"], raw["neighbours"]
    raw["built_at"] = "2026-11-20T10:00:00Z"  # format 1 indexes recorded their build time
    (tmp_path / "index.json").write_text(json.dumps(raw))
    loaded = ProductIndex.load(tmp_path)
    assert loaded.meta.text_weight == 0.5 and loaded.neighbours(1, 1) is None


def test_text_weight_is_chosen_by_precision_on_the_given_products() -> None:
    index = toy_index(text_noise=2.0, image_noise=10.0)  # the photos are mostly noise
    ids = [f"p{i}" for i in range(60)]
    tuned, figures = tune_text_weight(index, ids, 5, [0.5, 0.9])
    precision = {
        w: precision_at_k(with_text_weight(index, w), list(range(60)), 5, "image+text")[0]
        for w in (0.5, 0.9)
    }
    assert precision[0.9] > precision[0.5]
    assert tuned.meta.text_weight == figures["text_weight"] == 0.9
    assert figures["val_precision_at_5_image_text_w0.9"] == precision[0.9]
    fixed, figures = tune_text_weight(index, ids, 5, [0.7])
    assert fixed.meta.text_weight == 0.7 and figures == {"text_weight": 0.7}


def test_query_sample_is_stable_and_capped() -> None:
    ids = [f"p{i}" for i in range(60)]
    assert query_sample(ids, 60) == ids  # at most the cap: all of them, as given
    sample = query_sample(ids, 10)
    assert len(sample) == 10 and set(sample) <= set(ids)
    assert query_sample(list(reversed(ids)), 10) == sample  # the order does not matter
    # products coming in never bring an old one into the sample: it is the smallest hashes
    grown = query_sample(ids + [f"q{i}" for i in range(5)], 10)
    assert {i for i in grown if i.startswith("p")} <= set(sample)


def test_evaluate_index_scores_at_most_max_queries() -> None:
    index = toy_index()
    ids = [f"p{i}" for i in range(60)]
    everything = evaluate_index(index, ids, 5)
    capped = evaluate_index(index, ids, 5, max_queries=12)
    assert everything["queries_text"] == 60 and capped["queries_text"] == 12
    assert evaluate_index(index, ids, 5, max_queries=60) == everything


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_search_many_is_search_per_query(factory: str) -> None:
    index = toy_index(factory)
    positions = [0, 5, 9, 30]
    queries = np.stack([index.product_query(p) for p in positions])
    mask = index.allowed(require_image=True)
    for m in (None, mask):
        batched = index.search_many(queries, 7, mask=m, exclude=positions)
        for position, query, found in zip(positions, queries, batched, strict=True):
            single = index.search(query, 7, mask=m, exclude=position)
            assert [p for p, _ in found] == [p for p, _ in single]
            assert np.allclose([s for _, s in found], [s for _, s in single], atol=1e-5)
