"""Headless Chromium driving the search page against a real uvicorn on the sample's model.

The registry is the serving tests' (``tests/serving/conftest.py``, shared: this package
sits inside theirs). Chromium is Debian's (``/usr/bin/chromium``; ``make test`` installs it
when it is missing and it runs as root), driven by Playwright for Python without
``playwright install``. Chromium gets its own HOME and TMPDIR under the test's temp folder.
Where Playwright or Chromium is missing, the tests skip and say which.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import running_api
from tests.helpers.browser import (
    CATALOGUE_TOKEN,
    CHROMIUM_ENV,
    MAX_UPLOAD_BYTES,
    Api,
    chromium_path,
)
from tests.helpers.tiny import Registry


@pytest.fixture(scope="module")
def api(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """``python -m serving`` on a free loopback port, ready; stopped by its PID afterwards.
    Listing changes are on (``CATALOGUE_TOKEN``); its log and prediction log live in the
    test's temp folder."""
    settings = {
        "MARKETPLACE_MODEL_NAME": registry.name,
        "MARKETPLACE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "MARKETPLACE_CATALOGUE_TOKEN": CATALOGUE_TOKEN,
        "MARKETPLACE_LIVE_DIR": str(tmp_path_factory.mktemp("live")),
    }
    with running_api(registry.uri, settings, 90) as base:
        yield Api(base, registry)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium (Playwright), or skip with the reason."""
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (it is a dev dependency: make venv)")
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "no Chromium: `make test` installs Debian's (apt-get install -y "
            "--no-install-recommends chromium) when run as root; or set "
            f"{CHROMIUM_ENV} to a Chromium binary"
        )
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("chromium-home")
    (home / "tmp").mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home / "tmp")}
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            env=env,
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, api: Api) -> Iterator[Any]:
    """A fresh page on the search page; fails the test on an uncaught script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(api.base + "/")
    page.wait_for_function("document.getElementById('model').dataset.version !== undefined")
    try:
        yield page
    finally:
        context.close()
    assert not script_errors, script_errors


@pytest.fixture
def shot(page: Any, tmp_path: Path) -> Callable[[str], Path]:
    """``shot("name")``: a full-page screenshot into the test's temp folder."""

    def take(name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        return path

    return take
