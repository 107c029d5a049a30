"""``make ui``: the address lands on the training runs; the UI runs without job consumers."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from marketplace.mlops.ui import landing_url, ui_command


def test_ui_lands_on_training_runs_with_one_worker_and_no_jobs(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = "http://127.0.0.1:5000"
    # MLflow 3.17's UI picks an experiment's landing page from `workflowType` (URL, else
    # the browser's stored value, default GenAI), not from the experiment's tags.
    assert landing_url(base, uri) == f"{base}/#/experiments?workflowType=machine_learning"
    experiment = MlflowClient(uri).create_experiment("marketplace")
    assert landing_url(base, uri) == (
        f"{base}/#/experiments/{experiment}?workflowType=machine_learning"
    )
    argv, env = ui_command(uri, tmp_path / "art", "127.0.0.1", 5000)
    assert argv[1] == "ui" and argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--backend-store-uri") + 1] == uri
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
