"""The real DVC pipeline on a small sample, in a temporary git + DVC repository.

Runs `dvc repro` exactly as a user would (the stage commands, params.yaml, dvc.yaml of this
project) and checks what a user relies on: the outputs appear, a second `dvc repro` runs
nothing, and a params change reruns only the stages that read that key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from marketplace.data.sample import generate_sample
from tests.helpers import make_project_copy, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project_copy(tmp_path_factory.mktemp("repo"))
    generate_sample(root / "data", seed=0, per_category=6)
    run(["dvc", "add", "-q", "data"], root)
    result = run(["dvc", "repro"], root)
    for stage in ("clean_tabular", "clean_images", "split"):
        assert f"Running stage '{stage}'" in result.stdout
    return root


def test_outputs_exist_and_agree(repo: Path) -> None:
    listings = pd.read_parquet(repo / "outputs/clean/listings.parquet")
    label_map = json.loads((repo / "outputs/clean/label_map.json").read_text())
    assert len(label_map["categories"]) == 13
    assert set(listings["label"]) == set(range(13))
    cleaned = {p.stem for p in (repo / "outputs/images").iterdir()}
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


def test_param_change_reruns_only_the_stage_that_reads_it(repo: Path) -> None:
    params = repo / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("seed: 42", "seed: 43"))
        result = run(["dvc", "repro"], repo)
        assert "Running stage 'split'" in result.stdout
        assert "Running stage 'clean_tabular'" not in result.stdout
        assert "Running stage 'clean_images'" not in result.stdout
    finally:
        params.write_text(original)
    run(["dvc", "repro"], repo)  # back to the committed state for any later test
