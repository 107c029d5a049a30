"""The label map: root category name <-> class index, in a stable (sorted) order.

Saved next to every model so an index in a checkpoint always means the same category,
whatever order the rows of an export come in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class LabelMap:
    """Ordered category names; a category's index is its position."""

    categories: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.categories:
            raise ValueError("a label map needs at least one category")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("duplicate category in label map")

    @classmethod
    def from_categories(cls, names: Iterable[str]) -> LabelMap:
        """Build from any iterable of category names (duplicates allowed): sorted, unique."""
        return cls(tuple(sorted(set(names))))

    def __len__(self) -> int:
        return len(self.categories)

    def index(self, name: str) -> int:
        """Class index of ``name``; ``KeyError`` naming the category if unknown."""
        try:
            return self._positions[name]
        except KeyError:
            raise KeyError(f"unknown category {name!r}") from None

    def name(self, index: int) -> str:
        """Category name of class ``index``."""
        if not 0 <= index < len(self.categories):
            raise IndexError(f"class index {index} out of range 0..{len(self.categories) - 1}")
        return self.categories[index]

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.categories)}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: both directions, so a reader needs no code to use it."""
        return {
            "categories": list(self.categories),
            "index_of": dict(self._positions),
        }

    def save(self, path: Path) -> None:
        """Write as JSON (UTF-8, stable formatting)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LabelMap:
        """Inverse of ``to_dict``; checks both directions agree."""
        categories = tuple(data["categories"])  # type: ignore[arg-type]
        label_map = cls(categories)
        index_of = data.get("index_of")
        if index_of is not None and index_of != label_map.to_dict()["index_of"]:
            raise ValueError("label map 'index_of' disagrees with 'categories'")
        return label_map

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        """Read a label map written by ``save``."""
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
