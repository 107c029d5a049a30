"""params.yaml loading: the project's own file loads; every schema violation names its key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from marketplace.config import ConfigError, load_params, params_from_dict
from tests.helpers import PROJECT_ROOT

BASE: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return data


_DELETE = object()


def test_project_params_load() -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.clean_images.size == 512
    assert params.split.val_fraction + params.split.test_fraction < 1
    with pytest.raises(AttributeError):
        params.split.seed = 1  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("clean_images.sise", 512, r"unknown key\(s\): clean_images.sise"),
        ("bogus_stage", {}, r"unknown key\(s\): bogus_stage"),
        ("clean_images.size", _DELETE, "missing key: clean_images.size"),
        ("split", _DELETE, "missing key: split"),
        ("clean_images.size", "big", "clean_images.size: expected an integer"),
        ("clean_images.size", 5.5, "clean_images.size: expected an integer"),
        ("clean_images.size", True, "clean_images.size: expected an integer"),
        ("clean_images.size", 4, r"clean_images.size: 4 must be in 8..4096"),
        ("clean_images.jpeg_quality", 100, "must be in 1..95"),
        ("clean_tabular.keep_duplicate", "middle", "not one of 'first', 'last'"),
        ("clean_tabular.price_max", -1, "must be > 0"),
        ("split.test_fraction", 0.9, r"val_fraction \+ split.test_fraction must be < 1"),
        ("split", [1, 2], "split: expected a mapping"),
        ("train.vision.finetune_blocks", -1, r"finetune_blocks: -1 must be >= 0"),
        ("train.vision.augment", "yes", "train.vision.augment: expected bool"),
        ("train.vision.finetune_lr", 0, "train.vision.finetune_lr: 0.0 must be > 0"),
        ("train.text.finetune_layers", 1.5, "train.text.finetune_layers: expected an integer"),
        ("train.text.finetune_epochs", 0, "must be >= 1"),
        ("train.text.finetune_layers", _DELETE, "missing key: train.text.finetune_layers"),
        ("train.combined.dropout", 1.0, r"train.combined.dropout: 1.0 must be in \[0, 1\)"),
    ],
)
def test_schema_violations_name_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(_with(path, value))


def test_int_is_accepted_where_a_float_is_expected() -> None:
    params = params_from_dict(_with("clean_tabular.price_max", 500))
    assert params.clean_tabular.price_max == 500.0
    assert isinstance(params.clean_tabular.price_max, float)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("split: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
