"""The real DVC pipeline on a small sample, in a temporary git + DVC repository.

Runs `dvc repro` exactly as a user would (the stage commands, params.yaml, dvc.yaml of this
project), through embedding, baselines and training with a real MLflow sqlite store inside
the scratch project, and checks what a user relies on: the outputs appear and agree, runs
and registered versions carry what they should, a logged model loads back and predicts
the same, a second `dvc repro` runs nothing, and a head-only param change reruns only
that head's stage. Then the index stage's output is checked in the registry, and the
version is promoted and queried from the command line, as `make demo` ends.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from marketplace.data.sample import generate_sample
from tests.helpers import make_project_copy, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STAGES = (
    "clean_tabular",
    "clean_images",
    "split",
    "embed_images",
    "embed_text",
    "tfidf",
    "baselines",
    "train_vision",
    "train_text",
    "train_combined",
    "thumbnails",
    "index",
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project_copy(tmp_path_factory.mktemp("repo"))
    generate_sample(root / "data", seed=0, per_category=6)
    run(["dvc", "add", "-q", "data"], root)
    result = run(["dvc", "repro"], root)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    return root


def test_outputs_exist_and_agree(repo: Path) -> None:
    listings = pd.read_parquet(repo / "outputs/clean/listings.parquet")
    label_map = json.loads((repo / "outputs/clean/label_map.json").read_text())
    assert len(label_map["categories"]) == 13
    assert set(listings["label"]) == set(range(13))
    cleaned = {p.stem for p in (repo / "outputs/images").glob("*.jpg")}  # + manifest.json
    report = pd.read_csv(repo / "reports/clean_images.csv", keep_default_na=False)
    assert cleaned == set(report.loc[report["status"] == "ok", "image_id"])
    split_ids = [
        line
        for name in ("train", "val", "test")
        for line in (repo / f"outputs/split/{name}.txt").read_text().split()
    ]
    assert sorted(split_ids) == sorted(listings["product_id"].unique())
    metrics = json.loads((repo / "metrics/clean_tabular.json").read_text())
    assert metrics["products"]["rows_out"] == listings["product_id"].nunique()


def test_second_repro_runs_nothing(repo: Path) -> None:
    result = run(["dvc", "repro"], repo)
    assert "Running stage" not in result.stdout
    assert "Data and pipelines are up to date" in result.stdout


def test_push_to_s3_and_pull_into_a_second_clone_runs_nothing(repo: Path, tmp_path: Path) -> None:
    """A team's DVC remote on the stack's S3 server (rclone): what one clone pushes, a fresh
    clone pulls, and its `dvc repro` then does no work. The MLflow store is not part of
    this: a pull brings files, not registered versions (README, "The team stack")."""
    import subprocess

    from ops.stack import Stack, StackError

    stack = Stack(tmp_path / "stack")
    try:
        stack.start("s3")
    except (OSError, StackError, subprocess.SubprocessError) as exc:
        pytest.skip(f"the S3 server (rclone) cannot run here: {exc}")
    try:
        stack.configure_dvc_remote(repo, prefix="pipeline")
        run(["dvc", "push", "-q"], repo)
        with (repo / ".gitignore").open("a") as ignore:  # beside DVC's own entries (/data)
            ignore.write("/mlflow.db\n/mlartifacts/\n/mlruns/\n")
        run(["git", "add", "-A"], repo)
        identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
        run(["git", *identity, "commit", "-qm", "pipeline"], repo)
        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
        stack.configure_dvc_remote(clone, prefix="pipeline")  # the keys stay out of git
        run(["dvc", "pull", "-q"], clone)
        for path in ("outputs/embeddings/images.npz", "outputs/models/combined/config.json"):
            assert (clone / path).read_bytes() == (repo / path).read_bytes()
        result = run(["dvc", "repro"], clone)
        assert "Running stage" not in result.stdout
        assert "Data and pipelines are up to date" in result.stdout
    finally:
        stack.stop_service("s3")


def _mlflow(repo: Path):
    import mlflow

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(uri)


def test_runs_are_tracked_and_grouped(repo: Path) -> None:
    client = _mlflow(repo)
    (experiment,) = [e for e in client.search_experiments() if e.name == "marketplace"]
    runs = client.search_runs([experiment.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert {"vision", "text", "combined", "price_linear_regression", "svc_pixels"} <= set(by_name)
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs} - {None}
    assert len(parents) == 1, "one dvc repro, one parent run"
    run = by_name["combined"]
    assert run.data.params["train.combined.lr"] == "0.005"
    assert run.data.params["embed_images.encoder"] == "efficientnet_lite2"
    assert run.data.params["tfidf.word_buckets"] == "262144"  # the tfidf stage's params too
    for key in ("test_accuracy", "test_macro_f1", "test_top3_accuracy", "val_accuracy"):
        assert 0.0 <= run.data.metrics[key] <= 1.0
    curve = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert len(curve) >= run.data.metrics["best_epoch"] >= 1
    assert run.data.tags["stage"] == "train_combined"
    assert run.data.tags["data_dvc_md5"].endswith(".dir")
    assert len(run.data.tags["git_commit"]) >= 7
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {
        "reports/confusion.png",
        "reports/learning_curves.png",
        "reports/per_class.json",
        "reports/history.csv",
    } <= artifacts
    metrics = json.loads((repo / "metrics/train_combined.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])


def test_models_registered_with_tags(repo: Path) -> None:
    client = _mlflow(repo)
    for name in ("marketplace-vision", "marketplace-text", "marketplace-combined"):
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert float(version.tags["test_accuracy"]) > 0
        assert version.tags["data_dvc_md5"].endswith(".dir")
        # Its model card, and the drift monitor's reference in its training run.
        assert version.description.startswith(f"# {name} version {version.version}")
        assert version.tags["data_dvc_md5"] in version.description
        artifacts = {a.path for a in client.list_artifacts(version.run_id, "monitor_reference")}
        assert artifacts == {"monitor_reference/reference.json", "monitor_reference/reference.npz"}


def test_index_travels_with_its_model_version(repo: Path) -> None:
    """The index is logged into the version whose encoders built it, and says so."""
    import mlflow

    client = _mlflow(repo)
    (version,) = client.search_model_versions("name = 'marketplace-combined'")
    products = pd.read_parquet(repo / "outputs/clean/listings.parquet")["product_id"].nunique()
    assert version.tags["index_size"] == str(products)
    assert 0 < float(version.tags["index_precision_at_10_text"]) <= 1
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/marketplace-combined/{version.version}")
    )
    meta = json.loads((local / "index/index.json").read_text())
    assert meta["model_version"] == str(version.version) and meta["size"] == products
    assert meta["package_sha256"] == version.tags["package_sha256"]
    metrics = json.loads((repo / "metrics/index.json").read_text())
    assert metrics["queries_text"] > 0 and 0 < metrics["precision_at_10_image_text"] <= 1
    # The listing photos for the search page travel in the model version's index folder.
    from marketplace.search.thumbnails import ThumbnailSet

    thumbnails = ThumbnailSet.load(local / "index")
    assert thumbnails is not None and 0 < len(thumbnails) <= products
    assert metrics["thumbnails"] == len(thumbnails)
    assert metrics["thumbnail_bytes"] == len(thumbnails.data)


def test_promote_and_query_from_the_command_line(repo: Path) -> None:
    result = run(["python", "-m", "marketplace.mlops.promotion"], repo)
    assert "marketplace-combined@production now points to version 1" in result.stderr
    out = run(
        ["python", "-m", "marketplace.inference", "--text", "PS4 console with games", "-k", "3"],
        repo,
    )
    answer = json.loads(out.stdout)
    assert answer["model"] == "marketplace-combined/1" and len(answer["similar"]) == 3
    assert (
        answer["category"]
        in json.loads((repo / "outputs/clean/label_map.json").read_text())["categories"]
    )


def test_registered_model_round_trip(repo: Path) -> None:
    """log -> load by models:/<name>/<version> -> the same predictions as the saved folder."""
    import base64

    import mlflow

    from marketplace.models.classifier import ListingClassifier

    _mlflow(repo)
    model = mlflow.pyfunc.load_model("models:/marketplace-combined/1")
    photo = next((repo / "outputs/images").glob("*.jpg")).read_bytes()
    frame = pd.DataFrame(
        {
            "image": [base64.b64encode(photo).decode(), None],
            "text": ["Oak desk with drawers. Collection only", "PS4 console"],
            "price": [45.0, None],
        }
    )
    predicted = model.predict(frame)
    direct = ListingClassifier.load(repo / "outputs/models/combined").predict_proba(
        images=[photo, None], texts=list(frame["text"]), prices=[45.0, None]
    )
    names = ListingClassifier.load(repo / "outputs/models/combined").categories
    assert list(predicted["category"]) == [names[i] for i in direct.argmax(axis=1)]
    for row, expected in zip(predicted["probabilities"], direct, strict=True):
        np.testing.assert_allclose(list(json.loads(row).values()), expected, atol=1e-5)


def test_mlproject_entry_point_runs_the_same_stage(repo: Path) -> None:
    """`mlflow run . -e baselines` runs the stage module inside the Projects run."""
    run(
        [
            "mlflow",
            "run",
            ".",
            "-e",
            "baselines",
            "--env-manager",
            "local",
            "--experiment-name",
            "marketplace",
        ],
        repo,
    )
    client = _mlflow(repo)
    (experiment,) = [e for e in client.search_experiments() if e.name == "marketplace"]
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`mlflow.project.entryPoint` = 'baselines'"
    )
    assert len(runs) == 1
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{runs[0].info.run_id}'",
    )
    assert {c.info.run_name for c in children} == {"price_linear_regression", "svc_pixels"}


def test_dvc_experiments_metrics_diff_and_plots(repo: Path) -> None:
    """The issue's ML-engineer loop: `dvc exp run -S` on a head param (a params.yaml edit
    and a `dvc repro`) reruns only that head and the index built from it, and `dvc metrics
    diff` / `dvc plots show` compare it with the committed baseline. It commits the
    scratch repo: only the warm-start test comes after it."""
    for key, value in (("user.email", "ci@example.com"), ("user.name", "ci")):
        run(["git", "config", key, value], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "baseline"], repo)  # maybe committed
    baseline = json.loads((repo / "metrics/train_combined.json").read_text())

    lr = yaml.safe_load((repo / "params.yaml").read_text())["train"]["combined"]["lr"] * 0.5
    result = run(["dvc", "exp", "run", "-S", f"train.combined.lr={lr}"], repo)
    ran = {stage for stage in STAGES if f"Running stage '{stage}'" in result.stdout}
    assert ran == {"train_combined", "index"}

    shown = run(["dvc", "exp", "show", "--csv"], repo).stdout
    assert "train.combined.lr" in shown.splitlines()[0]
    assert str(lr) in shown

    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo).stdout)
    changed = diff.get("metrics/train_combined.json", {})  # only metrics that changed
    assert changed, diff  # a real rerun of the head, not a copy of the baseline
    for name, values in changed.items():
        assert values["old"] == pytest.approx(baseline[name])

    plots = run(["dvc", "plots", "show", "-o", "plots_html"], repo)
    page = (repo / "plots_html" / "index.html").read_text()
    assert "plots/combined/history.csv" in page, plots.stdout


def test_warm_start_from_the_production_version(repo: Path) -> None:
    """With ``train.combined.warm_epochs`` > 0 the stage starts from the weights of the
    version the production alias names (set by the promotion test above) and trains at most
    that many epochs; the run and the new version say where it started."""
    client = _mlflow(repo)
    production = client.get_model_version_by_alias("marketplace-combined", "production")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["combined"]["warm_epochs"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro", "train_combined"], repo)
    assert "Running stage 'train_combined'" in result.stdout
    expected = f"from marketplace-combined version {production.version}"
    assert expected in result.stdout + result.stderr
    metrics = json.loads((repo / "metrics/train_combined.json").read_text())
    assert metrics["warm_started"] == 1.0 and metrics["best_epoch"] <= 2
    history = (repo / "plots/combined/history.csv").read_text().strip().splitlines()
    assert len(history) - 1 <= 2  # a header, then at most warm_epochs epochs
    newest = max(
        client.search_model_versions("name = 'marketplace-combined'"), key=lambda v: int(v.version)
    )
    assert newest.tags["warm_start"] == expected
    assert client.get_run(newest.run_id).data.tags["warm_start"] == expected
