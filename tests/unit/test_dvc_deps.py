"""dvc.yaml's code dependencies cannot drift from the code: every module a stage imports
is covered by the stage's ``deps``, so editing it reruns the stage.

A stage's import closure starts at the module its ``cmd`` runs (``python -m pipeline.x``)
and follows every ``import`` of project code (``pipeline/`` and ``src/``), including the
lazy ones inside functions: a stage may run them (fine-tuning, for one, imports
``models.finetunable`` only when enabled). Imports under ``if TYPE_CHECKING:`` never run and
are skipped. A package's ``__init__.py`` runs whenever one of its modules is imported, so
it counts, unless it is inert (no imports, functions or classes: a docstring and
metadata such as ``__version__``). A module is covered by a dep naming its file or any
folder above it (whole packages are fine).

``OUTPUT_NEUTRAL`` modules run in every stage but cannot change what a stage writes, so they
are not deps (as deps, any edit to them would rerun the whole pipeline): their imports are
still followed.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.helpers import PROJECT_ROOT

SOURCE_ROOTS = (PROJECT_ROOT / "src", PROJECT_ROOT)  # marketplace.*; pipeline.*
PROJECT_PACKAGES = ("marketplace", "pipeline")
OUTPUT_NEUTRAL = {
    # The schema of params.yaml: every key is required (no defaults), and DVC tracks the
    # values themselves as each stage's params; the schema can only refuse a file.
    "src/marketplace/core/config.py",
    "src/marketplace/cli.py",  # logging set-up and exit codes
    "src/marketplace/core/errors.py",  # exception classes
    "src/marketplace/mlops/tracking.py",  # MLflow run tags and grouping, not DVC outs
    "src/marketplace/mlops/pyfunc.py",  # the MLflow model's code and names: registry content
    # Where a stage's own per-batch function runs (here, or on Ray with compute.backend: ray):
    # the same files either way (tests/integration/test_ray.py), so `compute` is no param.
    "src/marketplace/compute/batches.py",
    "src/marketplace/compute/ray.py",
    # What a training run logs to MLflow beside its model (the version's card, the drift
    # monitor's reference): registry content, never a DVC out.
    "src/marketplace/mlops/model_card.py",
    "src/marketplace/mlops/reference.py",
}
STAGES: dict[str, dict] = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The file of a project module or package, or None (not project code)."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    parts = name.split(".")
    for root in SOURCE_ROOTS:
        base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[str]:
    """Every module an AST imports (``from a import b`` may name a module ``a.b``)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _inert(init: Path) -> bool:
    body = ast.parse(init.read_text(encoding="utf-8")).body
    active = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.If, ast.Expr)
    return not any(
        isinstance(node, active)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        for node in body
    )


@cache
def import_closure(module: str) -> frozenset[Path]:
    """Project files that running ``module`` may execute."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path is None or path in seen:
                continue
            if path.name == "__init__.py" and _inert(path):
                continue
            seen.add(path)
            todo.extend(_imports(ast.parse(path.read_text(encoding="utf-8"))))
    return frozenset(seen)


def stage_module(stage: dict) -> str:
    match = re.match(r"python -m ([\w.]+)", stage["cmd"])
    assert match, f"unexpected cmd {stage['cmd']!r}: teach this test how to read it"
    return match.group(1)


def uncovered(stage: dict) -> list[str]:
    deps = [PROJECT_ROOT / d for d in stage.get("deps", [])]
    missing = []
    for path in import_closure(stage_module(stage)):
        if path.relative_to(PROJECT_ROOT).as_posix() in OUTPUT_NEUTRAL:
            continue
        if not any(path == d or d in path.parents for d in deps):
            missing.append(str(path.relative_to(PROJECT_ROOT)))
    return sorted(missing)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_its_import_closure(name: str) -> None:
    missing = uncovered(STAGES[name])
    assert not missing, f"dvc.yaml stage {name}: add to its deps: {', '.join(missing)}"


def test_the_closure_follows_lazy_imports_and_skips_type_checking_ones() -> None:
    closure = {p.relative_to(PROJECT_ROOT).as_posix() for p in import_closure("pipeline.train")}
    assert "src/marketplace/models/finetunable.py" in closure  # through training.finetune
    assert "src/marketplace/features/bert.py" in closure  # lazy, inside TextEncoder
    assert "src/marketplace/features/__init__.py" in closure  # the torchvision shim runs
    assert "src/marketplace/__init__.py" not in closure  # inert
    assert "src/marketplace/models/__init__.py" not in closure  # inert
    index = {p.relative_to(PROJECT_ROOT).as_posix() for p in import_closure("pipeline.index")}
    assert "src/marketplace/training/train.py" not in index  # registry's TYPE_CHECKING import


def test_a_missing_dep_is_reported() -> None:
    stage = dict(STAGES["train_text"])
    stage["deps"] = [d for d in stage["deps"] if not d.startswith("src/marketplace/features")]
    assert "src/marketplace/features/bert.py" in uncovered(stage)
