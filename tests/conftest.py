"""Shared fixtures. The real export is optional: tests that need it skip where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

# Nothing may reach a model hub: the packaged models load from site-packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REAL_DATA = PROJECT_ROOT.parent / "shared" / "data" / "marketplace"


@pytest.fixture(scope="session", autouse=True)
def live_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The API's live databases (catalogue log, ...) in a scratch folder, never the project's
    ``live/``: a test sees only the listings it puts (servers it starts inherit this)."""
    folder = tmp_path_factory.mktemp("live")
    os.environ["MARKETPLACE_LIVE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def real_export() -> Path:
    """The real Gumtree export, or skip: it is never committed, only present beside CI."""
    if not (REAL_DATA / "Products.csv").is_file():
        pytest.skip(f"real data not present at {REAL_DATA} (shared data is not committed)")
    return REAL_DATA
