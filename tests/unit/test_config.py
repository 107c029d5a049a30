"""params.yaml loading: the project's own file loads; every schema violation names its key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from marketplace.core.config import ConfigError, load_params, params_from_dict
from tests.helpers import PROJECT_ROOT
from tests.helpers.synthetic import DELETE, params_with


def test_project_params_load() -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.clean_images.size == 512
    assert params.split.val_fraction + params.split.test_fraction < 1
    with pytest.raises(ValueError, match="frozen"):
        params.split.seed = 1  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("clean_images.sise", 512, "clean_images.sise: unknown key"),
        ("bogus_stage", {}, "bogus_stage: unknown key"),
        ("clean_images.size", DELETE, "clean_images.size: missing key"),
        ("split", DELETE, "split: missing key"),
        ("clean_images.size", "big", "clean_images.size: Input should be a valid integer"),
        ("clean_images.size", 5.5, "clean_images.size: Input should be a valid integer"),
        ("clean_images.size", True, "clean_images.size: Input should be a valid integer"),
        ("clean_images.size", 4, r"clean_images.size: .* greater than or equal to 8 \(got 4\)"),
        ("clean_images.jpeg_quality", 100, "less than or equal to 95"),
        ("clean_tabular.keep_duplicate", "middle", "should be 'first' or 'last'"),
        ("clean_tabular.price_max", -1, "price_max: Input should be greater than 0"),
        ("split.test_fraction", 0.9, r"split: val_fraction \+ test_fraction must be < 1"),
        ("split", [1, 2], "split: Input should be a valid dictionary"),
        ("train.vision.finetune_blocks", -1, r"finetune_blocks: .* greater than or equal to 0"),
        ("train.vision.augment", "yes", "train.vision.augment: Input should be a valid boolean"),
        ("train.vision.finetune_lr", 0, "train.vision.finetune_lr: .* greater than 0"),
        ("train.text.finetune_layers", 1.5, "train.text.finetune_layers: .* valid integer"),
        ("train.text.finetune_epochs", 0, "greater than or equal to 1"),
        ("train.text.finetune_layers", DELETE, "train.text.finetune_layers: missing key"),
        ("train.combined.dropout", 1.0, r"train.combined.dropout: Input should be less than 1"),
        ("embed_images.encoder", "vgg16", "embed_images.encoder: Input should be 'efficientnet"),
        ("index.factory", "IVF0,Flat", "index.factory: String should match pattern"),
        ("index.text_weights", [], "index.text_weights: .* at least 1 item"),
        ("index.text_weights", [0.5, 1.5], r"index.text_weights.1: .* less than or equal to 1"),
        ("index.text_weights", ["0.5"], "index.text_weights.0: Input should be a valid number"),
        ("promote.alias", "Production", "promote.alias: String should match pattern"),
    ],
)
def test_schema_violations_name_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(params_with(path, value))


def test_every_problem_is_reported_at_once() -> None:
    data = params_with("clean_images.sise", 1)
    data["split"]["seed"] = "42"
    with pytest.raises(ConfigError, match=r"clean_images.sise: unknown key; split.seed: "):
        params_from_dict(data)


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"params\.yaml: Input should be a valid dictionary"):
        params_from_dict(None)


def test_reading_params_does_not_import_torch() -> None:
    code = (
        "import sys, marketplace.core.config as c; c.load_params(); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_int_is_accepted_where_a_float_is_expected() -> None:
    params = params_from_dict(params_with("clean_tabular.price_max", 500))
    assert params.clean_tabular.price_max == 500.0
    assert isinstance(params.clean_tabular.price_max, float)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("split: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
