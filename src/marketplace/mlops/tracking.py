"""MLflow tracking for the pipeline: where runs go, what every run is tagged with.

Defaults keep everything inside the project: a sqlite tracking and registry store
(``mlflow.db``) and a local artifact folder (``mlartifacts/``), both ignored by git.
``MLFLOW_TRACKING_URI`` overrides the store (e.g. a shared ``mlflow server``); artifacts
then go wherever that server puts them.

Runs of one ``dvc repro`` are grouped under one parent run: every stage derives the same
key from the git commit, the ``data.dvc`` hash and ``params.yaml``, and attaches to the
open parent run with that key (creating it if none exists).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULT_DB = Path("mlflow.db")
DEFAULT_ARTIFACTS = Path("mlartifacts")
EXPERIMENT = "marketplace"
PIPELINE_KEY_TAG = "marketplace.pipeline_key"
PROJECT_RUN_ENV = "MLFLOW_RUN_ID"  # set by `mlflow run` for the entry point's own run


def tracking_uri(project_root: Path = Path(".")) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's sqlite store."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{(project_root / DEFAULT_DB).resolve()}"
    )


def setup_tracking(project_root: Path = Path("."), experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id.

    Called by entry points, never at import. With the default store, the experiment's
    artifacts live in ``mlartifacts/`` beside it (not in the working directory).
    """
    import mlflow

    uri = tracking_uri(project_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if os.environ.get(PROJECT_RUN_ENV):  # under `mlflow run`: stay in that run's experiment
        return mlflow.get_run(os.environ[PROJECT_RUN_ENV]).info.experiment_id
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = None
        if "MLFLOW_TRACKING_URI" not in os.environ:
            location = (project_root / DEFAULT_ARTIFACTS).resolve().as_uri()
        try:
            experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
        except mlflow.MlflowException as exc:
            # Another process created it since the lookup (trainers starting together on a
            # shared server). mlflow.set_experiment(name) has the same race and then leaves
            # no experiment active, so the run lands in "Default": hence by id, here.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested params (dicts or pydantic models) as ``{"train.vision.lr": "0.001"}`` strings."""
    if hasattr(data, "model_dump"):  # the params.yaml models (marketplace.core.config)
        data = data.model_dump()
    if isinstance(data, Mapping):
        flat: dict[str, str] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(data, list | tuple):
        return {prefix[:-1]: ",".join(str(v) for v in data)}
    return {prefix[:-1]: str(data)}


def git_commit(project_root: Path = Path(".")) -> str:
    """The checked-out commit (``+dirty`` when tracked files changed), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project_root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def data_version(project_root: Path = Path(".")) -> str:
    """The raw data's content hash as recorded in ``data.dvc`` (``unknown`` without it)."""
    try:
        outs = yaml.safe_load((project_root / "data.dvc").read_text())["outs"]
        return str(outs[0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


def standard_tags(stage: str, project_root: Path = Path(".")) -> dict[str, str]:
    """Tags every run carries: where its code, data and stage came from."""
    return {
        "git_commit": git_commit(project_root),
        "data_dvc_md5": data_version(project_root),
        "stage": stage,
    }


def pipeline_key(project_root: Path = Path("."), params_file: Path = Path("params.yaml")) -> str:
    """Same for every stage of one ``dvc repro``: commit + data hash + params content."""
    digest = hashlib.sha256()
    digest.update(git_commit(project_root).encode())
    digest.update(data_version(project_root).encode())
    with contextlib.suppress(OSError):
        digest.update((project_root / params_file).read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def pipeline_parent_run(project_root: Path = Path(".")) -> Iterator[str]:
    """Enter the parent run of this ``dvc repro`` (found by key, else created).

    Under ``mlflow run`` the entry point's own run is the parent instead.
    """
    import mlflow

    if os.environ.get(PROJECT_RUN_ENV):
        # Taken out of the environment: MLflow would otherwise resume it for the first
        # nested run too, instead of creating a child.
        project_run_id = os.environ.pop(PROJECT_RUN_ENV)
        with mlflow.start_run(run_id=project_run_id) as project_run:
            yield project_run.info.run_id
        return

    key = pipeline_key(project_root)
    found = mlflow.search_runs(
        filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1, output_format="list"
    )
    tags = {PIPELINE_KEY_TAG: key, **standard_tags("pipeline", project_root)}
    run_id = found[0].info.run_id if found else None
    with mlflow.start_run(
        run_id=run_id,
        run_name=None if run_id else f"pipeline-{key[:8]}",
        tags=None if run_id else tags,
    ) as parent:
        yield parent.info.run_id
