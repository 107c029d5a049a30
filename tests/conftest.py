"""Shared fixtures. The real export is optional: tests that need it skip where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

# Nothing may reach a model hub: the packaged models load from site-packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REAL_DATA = PROJECT_ROOT.parent / "shared" / "data" / "marketplace"


@pytest.fixture(scope="session")
def real_export() -> Path:
    """The real Gumtree export, or skip: it is never committed, only present beside CI."""
    if not (REAL_DATA / "Products.csv").is_file():
        pytest.skip(f"real data not present at {REAL_DATA} (shared data is not committed)")
    return REAL_DATA
