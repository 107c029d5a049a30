"""The MLflow UI over the project's tracking store, opening on the training runs.

``python -m marketplace.mlops.ui`` (``make ui``) starts ``mlflow ui`` on the project's
store (``MLFLOW_TRACKING_URI`` or ``mlflow.db``) and prints the address to open.

Why an address with ``?workflowType=machine_learning``: MLflow 3.17's UI decides an
experiment's kind, and so its landing page, from the browser's stored workflow type
(local storage ``mlflow.workflowType``, default ``genai``: "Overview: Traces / Detect
issues"), not from the experiment's ``mlflow.experimentKind`` tag; a ``workflowType``
query parameter overrides the stored value, and a machine-learning experiment lands on
its runs. The UI's "Model training" switch stores the choice for later visits.

Why ``--workers 1`` and ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: a local UI needs
neither four web workers nor MLflow's job consumers (GenAI evaluation jobs): two
processes (the CLI and one uvicorn) instead of six. When ``MLFLOW_TRACKING_URI`` is
already a server (the team stack), that server is the UI: only its address is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from marketplace.mlops.tracking import DEFAULT_ARTIFACTS, EXPERIMENT, tracking_uri

LANDING = "workflowType=machine_learning"


def landing_url(base: str, uri: str, experiment: str = EXPERIMENT) -> str:
    """Where a user comparing training runs should land: the experiment's runs (or the
    experiment list while it does not exist yet), as machine learning, not GenAI."""
    from mlflow import MlflowClient

    found = MlflowClient(uri).get_experiment_by_name(experiment)
    page = f"experiments/{found.experiment_id}" if found is not None else "experiments"
    return f"{base.rstrip('/')}/#/{page}?{LANDING}"


def ui_command(uri: str, artifacts: Path, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """``mlflow ui`` with one web worker and no job consumers: its argv and environment."""
    argv = [
        str(Path(sys.executable).with_name("mlflow")),
        "ui",
        "--host", host,
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", uri,
        "--default-artifact-root", str(artifacts.resolve()),
    ]  # fmt: skip
    return argv, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketplace ui", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):  # a tracking server is its own UI
        print(f"MLflow UI (the tracking server): {landing_url(uri, uri)}", flush=True)
        return 0
    command, env = ui_command(uri, DEFAULT_ARTIFACTS, args.host, args.port)
    url = landing_url(f"http://{args.host}:{args.port}", uri)
    print(f"MLflow UI on {uri}: open {url} (training runs)", flush=True)
    os.execve(command[0], command, env)  # the UI replaces this process (Ctrl-C stops it)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
