"""The layers hold: import-linter's contracts (pyproject.toml) and what the API loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("ops", "pipeline", "serving", "src")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_hold() -> None:
    result = _lint_imports(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_import_breaks_a_contract(tmp_path: Path) -> None:
    """The contracts are live: the import the layout once had (the API's index module
    using training code) fails them."""
    for name in PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / name,
            tmp_path / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
        )
    shutil.copy2(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    index = tmp_path / "src" / "marketplace" / "search" / "index.py"
    index.write_text(
        index.read_text() + "\n\ndef _late():\n    from marketplace.training import inputs\n"
    )
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "marketplace.search.index -> marketplace.training.inputs" in result.stdout


def test_serving_app_loads_no_training_cli_pipeline_or_ray_code() -> None:
    code = "import json, sys; import serving.app; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "marketplace.inference" in loaded  # the check looks at the right process
    forbidden = (
        "marketplace.training",
        "marketplace.search.build",
        "marketplace.mlops.registry",
        "marketplace.compute.ray",
        "marketplace.cli",
        "pipeline",
        "ray",
    )
    wrong = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not wrong, f"importing serving.app loaded {wrong}"


def test_every_module_says_what_it_holds() -> None:
    """Each module of the library, the stages, the API and ops opens with a docstring
    whose first line says what it holds (the layout's one guess per concern)."""
    import ast

    roots = ("src/marketplace", "pipeline", "serving", "ops")
    files = [p for root in roots for p in sorted((PROJECT_ROOT / root).rglob("*.py"))]
    assert len(files) > 80
    missing = []
    for path in files:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if not doc or not doc.splitlines()[0].strip():
            missing.append(str(path.relative_to(PROJECT_ROOT)))
    assert missing == []
