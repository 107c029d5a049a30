"""Pure helpers of the tracking module: param flattening, tags, the pipeline key."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketplace.core.config import load_params
from marketplace.mlops.tracking import data_version, flatten, pipeline_key, tracking_uri
from tests.helpers import PROJECT_ROOT


def test_flatten_params_dataclasses_and_lists() -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    flat = flatten({"train": params.train, "tfidf": params.tfidf})
    assert flat["train.combined.lr"] == str(params.train.combined.lr)
    assert flat["tfidf.word_buckets"] == str(params.tfidf.word_buckets)
    assert flatten({"a": [1, 2], "b": {"c": None}}) == {"a": "1,2", "b.c": "None"}


def test_tracking_uri_defaults_to_project_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_data_version_reads_data_dvc(tmp_path: Path) -> None:
    assert data_version(tmp_path) == "unknown"
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc.dir\n  path: data\n")
    assert data_version(tmp_path) == "abc.dir"


def test_pipeline_key_changes_with_params_and_data(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("a: 1\n")
    first = pipeline_key(tmp_path)
    assert pipeline_key(tmp_path) == first
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert pipeline_key(tmp_path) != first
    second = pipeline_key(tmp_path)
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc.dir\n  path: data\n")
    assert pipeline_key(tmp_path) != second
