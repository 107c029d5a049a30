"""One team stack for these tests: PostgreSQL, an S3 server and ``mlflow server``, started
once on free loopback ports (``ops.stack``) and stopped by PID at the end, with the tiny
serving registry (tests.helpers.tiny: the same library calls as the stages) trained
and registered into it through the server's artifact proxy.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from ops.stack import Stack, running_stack
from tests.helpers.stack import Remote, register_tiny_production, runnable
from tests.helpers.tiny import MODEL


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    reason = runnable()
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
