"""Every query kind is a product: the built-in sample's models, scored kind by kind.

Runs the real pipeline on the built-in sample (as ``make demo`` does) in a scratch
project, promotes the combined model, then checks what issue 11 asks of it: a photo alone
is classified about as well as by the vision model and far above chance, a photo with its
text is not worse than the text alone, and ``marketplace.mlops.evaluation`` scores an export nobody
trained on, per kind, against a model URI and against a real uvicorn serving the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from marketplace.data.sample import generate_sample
from tests.helpers import make_project_copy, run, running_api

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHANCE = 1 / 13
KINDS = ("image", "text", "image_text")
FIGURES = ("accuracy", "macro_f1", "top3_accuracy", "log_loss", "ece", "n")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project_copy(tmp_path_factory.mktemp("sample-project"))
    # The built-in sample at half its size (50 listings per category): the default 100
    # doubles this module's time (about 8 CPU-minutes on two cores) for CI.
    generate_sample(root / "data", per_category=50)
    run(["dvc", "add", "-q", "data"], root)
    # Every stage but the baselines (nothing here reads them; test_dvc_pipeline runs all).
    run(["dvc", "repro", "train_vision", "train_text", "index"], root)
    run(["python", "-m", "marketplace.mlops.promotion"], root)
    return root


@pytest.fixture(scope="module")
def unseen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny export in the usual format that no model here trained on (another seed)."""
    folder = tmp_path_factory.mktemp("unseen") / "export"
    generate_sample(folder, seed=7, per_category=3)
    return folder


@pytest.fixture(scope="module")
def model_report(project: Path, unseen: Path, tmp_path_factory: pytest.TempPathFactory):
    """``marketplace.mlops.evaluation`` of the unseen export against ``@production``, run once: the
    output folder and what the command printed."""
    out = tmp_path_factory.mktemp("model-report")
    result = run(
        ["python", "-m", "marketplace.mlops.evaluation", "--from", str(unseen), "--out", str(out)],
        project,
    )
    return out, result.stdout


def _metrics(project: Path, stage: str) -> dict[str, float]:
    return json.loads((project / f"metrics/{stage}.json").read_text())


def test_a_photo_alone_is_classified_by_the_production_model(project: Path) -> None:
    vision = _metrics(project, "train_vision")
    combined = _metrics(project, "train_combined")
    # The vision model answers per photo, the combined model per listing (its photos'
    # mean vector): the same test products.
    assert combined["test_image_accuracy"] >= vision["test_image_accuracy"] - 0.03, combined
    assert combined["test_image_accuracy"] > 4 * CHANCE
    assert combined["test_image_text_accuracy"] >= combined["test_text_accuracy"], combined


def test_each_kind_is_reported_and_calibrated(project: Path) -> None:
    combined = _metrics(project, "train_combined")
    for split in ("val", "test"):
        for kind in KINDS:
            for figure in FIGURES:
                assert f"{split}_{kind}_{figure}" in combined
    config = json.loads((project / "outputs/models/combined/config.json").read_text())
    assert set(config["calibration"]) == {"image", "text", "image+text"}
    assert all(0.05 <= t <= 20 for t in config["calibration"].values())
    for kind in KINDS:  # ~100 test rows per kind here: ECE's noise alone is ~0.1
        assert combined[f"test_{kind}_ece"] < 0.25, combined
    assert _metrics(project, "train_vision")["test_image_n"] > 0
    assert set(k for k in _metrics(project, "train_text") if k.startswith("test_text_")) == {
        f"test_text_{f}" for f in FIGURES
    }
    index = _metrics(project, "index")
    assert index["precision_at_10_image"] > 2 * CHANCE


def test_evaluate_an_unseen_export_against_the_registered_model(
    project: Path, unseen: Path, model_report: tuple[Path, str], tmp_path: Path
) -> None:
    import mlflow

    out, stdout = model_report
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["products"] == 39
    for kind in KINDS:
        assert metrics[f"{kind}_n"] > 0 and 0 <= metrics[f"{kind}_accuracy"] <= 1
    assert metrics["text_n"] == 39  # every product has a text; fewer have a photo
    assert "| image+text |" in stdout
    predictions = (out / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "product_id,query,actual,predicted,confidence"
    assert len(predictions) - 1 == sum(metrics[f"{kind}_n"] for kind in KINDS)
    # Rows the sample spoils on purpose are reported with their reason, not dropped silently.
    issues = (out / "issues.csv").read_text()
    assert "missing_file" in issues or "corrupt_image" in issues

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, uri)
    version = client.get_model_version_by_alias("marketplace-combined", "production")
    run_id = version.tags["evaluation.export"]
    evaluation = client.get_run(run_id)
    assert evaluation.data.tags["model_version"] == str(version.version)
    assert evaluation.data.metrics["image_accuracy"] == pytest.approx(metrics["image_accuracy"])
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} >= {
        "evaluation/metrics.json",
        "evaluation/predictions.csv",
    }
    # MLflow 3 links the metrics to the logged model behind the version.
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert any(m.key == "image_accuracy" and m.run_id == run_id for m in logged.metrics or [])

    # A .zip of the export is read the same way; the vision model answers photos only.
    archive = shutil.make_archive(str(tmp_path / "unseen"), "zip", unseen.parent)
    run(
        [
            "python",
            "-m",
            "marketplace.mlops.evaluation",
            "--from",
            archive,
            "--no-mlflow",
            "--model",
            "models:/marketplace-vision/1",
            "--out",
            str(tmp_path / "vision"),
        ],
        project,
    )
    vision = json.loads((tmp_path / "vision/metrics.json").read_text())
    assert vision["image_n"] == metrics["image_n"] and "text_n" not in vision


def test_evaluate_an_unseen_export_against_a_running_api(
    project: Path, unseen: Path, model_report: tuple[Path, str], tmp_path: Path
) -> None:
    with running_api(f"sqlite:///{project / 'mlflow.db'}") as base:
        run(
            [
                "python", "-m", "marketplace.mlops.evaluation", "--from", str(unseen),
                "--out", str(tmp_path / "api"), "--url", base,
            ],
            project,
        )  # fmt: skip
    api = json.loads((tmp_path / "api/metrics.json").read_text())
    direct = json.loads((model_report[0] / "metrics.json").read_text())
    # The API runs the same inference class on the same model: the same answers.
    for kind in KINDS:
        assert api[f"{kind}_n"] == direct[f"{kind}_n"]
        assert api[f"{kind}_accuracy"] == pytest.approx(direct[f"{kind}_accuracy"])
        assert api[f"{kind}_log_loss"] == pytest.approx(direct[f"{kind}_log_loss"], abs=1e-3)
