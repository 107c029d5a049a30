"""The documentation site builds with ``mkdocs build --strict`` (what ``make docs`` runs) and
its generated reference covers the code: every params.yaml key, API path and command.

One strict build (~10 s, most of it the hook's child process importing torch once) serves
every test here; a broken link or anchor, a page left out of the nav, or a command whose
``--help`` fails is a warning, so the build fails on it.
"""

from __future__ import annotations

import html
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from marketplace.core.config import load_params
from tests.helpers import PROJECT_ROOT


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", PROJECT_ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _text(site: Path, page: str) -> str:
    return html.unescape((site / page).read_text(encoding="utf-8"))


def _keys(model: BaseModel, prefix: str = "") -> list[str]:
    keys = []
    for name, value in dict(model).items():
        if isinstance(value, BaseModel):  # a nested section
            keys += _keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_params_key_is_documented(site: Path) -> None:
    text = _text(site, "reference/params.html")
    keys = _keys(load_params(PROJECT_ROOT / "params.yaml"))
    assert len(keys) > 50
    assert [key for key in keys if f"<code>{key}</code>" not in text] == []


def test_every_api_operation_is_documented(site: Path) -> None:
    import json

    schema = json.loads((site / "reference" / "openapi.json").read_text(encoding="utf-8"))
    text = _text(site, "reference/api.html")
    operations = [f"{m.upper()} {p}" for p, ms in schema["paths"].items() for m in ms]
    assert "POST /predict" in operations
    assert [op for op in operations if f"<code>{op}</code>" not in text] == []


def test_every_command_has_its_help(site: Path) -> None:
    hooks = _hooks()
    modules = hooks.command_modules(PROJECT_ROOT)
    assert {"pipeline.train", "pipeline.index"} <= set(modules)
    commands = hooks.marketplace_commands()
    assert {"promote", "predict", "serve", "stack"} <= set(commands)
    text = _text(site, "reference/cli.html")
    for module in modules:
        assert f"<code>python -m {module}</code>" in text, module
        assert f"usage: python -m {module}" in text, module
    assert "usage: marketplace [-h]" in text
    for name in commands:
        assert f"<code>marketplace {name}</code>" in text, name
        assert f"usage: marketplace {name}" in text, name


def test_the_pipeline_page_has_every_stage(site: Path) -> None:
    import yaml

    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    text = _text(site, "concepts/pipeline.html")
    assert [s for s in stages if f"<code>{s}</code>" not in text] == []


def test_table_cells_escape_pipes_outside_code() -> None:
    cell = _hooks()._cell
    assert cell("a | b `c|d`") == "a \\| b `c|d`"
    assert cell("one\nline\n\nnext") == "one line<br>next"


def test_the_stage_table_reads_templated_stages_and_param_files() -> None:
    """``foreach`` stages, command lists and ``{file: [keys]}`` params, as dvc.yaml allows."""
    hooks = _hooks()
    dvc = {
        "stages": {
            "clean": {"cmd": "python -m pipeline.clean", "outs": ["outputs/clean"]},
            "shard": {
                "foreach": [0, 1],
                "do": {
                    "cmd": ["python -m pipeline.shard ${item}", "echo done"],
                    "deps": ["outputs/clean/rows.parquet", "pipeline/shard.py"],
                    "params": [{"params.yaml": ["shard.size"]}],
                },
            },
        }
    }
    table = hooks.render_stages(dvc)
    assert "| `shard@…` | `clean` | `outputs/clean/rows.parquet` | `shard.size` |" in table
    assert hooks._stage_params(dvc) == {"shard.size": ["shard@…"]}
