"""The browser tests' shared pieces (tests/serving/browser, bench/bench_page.py): where
Chromium is, and the API they drive."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from tests.helpers.tiny import Registry

CHROMIUM_ENV = "MARKETPLACE_CHROMIUM"  # another Chromium binary than Debian's
MAX_UPLOAD_BYTES = 256 * 1024  # small, so that a 413 is cheap to provoke
CATALOGUE_TOKEN = "seller-test-token"  # the API under test accepts listing changes with it


def chromium_path() -> str | None:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class Api:
    base: str
    registry: Registry
