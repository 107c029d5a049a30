"""The label map: stable order and a lossless JSON round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketplace.data.labels import LabelMap
from marketplace.data.schema import ROOT_CATEGORIES


def test_order_is_sorted_whatever_the_input_order() -> None:
    shuffled = list(reversed(ROOT_CATEGORIES)) + list(ROOT_CATEGORIES)
    label_map = LabelMap.from_categories(shuffled)
    assert label_map.categories == tuple(sorted(ROOT_CATEGORIES))
    assert len(label_map) == 13
    assert label_map.index("Appliances") == 0
    assert label_map.name(12) == "Video Games & Consoles"


def test_round_trip(tmp_path: Path) -> None:
    label_map = LabelMap.from_categories(ROOT_CATEGORIES)
    path = tmp_path / "sub" / "label_map.json"
    label_map.save(path)
    assert LabelMap.load(path) == label_map
    assert all(label_map.name(label_map.index(c)) == c for c in ROOT_CATEGORIES)


def test_errors_name_the_problem() -> None:
    label_map = LabelMap.from_categories(["a", "b"])
    with pytest.raises(KeyError, match="unknown category 'c'"):
        label_map.index("c")
    with pytest.raises(IndexError, match="out of range"):
        label_map.name(2)
    with pytest.raises(ValueError, match="duplicate"):
        LabelMap(("a", "a"))
    with pytest.raises(ValueError, match="disagrees"):
        LabelMap.from_dict({"categories": ["a", "b"], "index_of": {"a": 1, "b": 0}})
