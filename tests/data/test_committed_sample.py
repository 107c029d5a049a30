"""The committed data.dvc describes exactly what `python -m marketplace.data.sample` generates.

A fresh clone has data.dvc but no data/: `make demo` regenerates the sample, and DVC must
find it identical to what data.dvc recorded, byte for byte, or every clone would start
with a "modified" raw dataset.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from marketplace.data.sample import generate_sample
from tests.helpers import PROJECT_ROOT, make_project_copy, run


def _out(dvc_file: Path) -> dict[str, object]:
    (out,) = yaml.safe_load(dvc_file.read_text())["outs"]
    return {key: out[key] for key in ("md5", "size", "nfiles", "path")}


@pytest.mark.slow
@pytest.mark.integration
def test_fresh_sample_matches_committed_data_dvc(tmp_path: Path) -> None:
    project = make_project_copy(tmp_path / "project")
    generate_sample(project / "data")  # the defaults, as `make demo` runs it
    run(["dvc", "add", "-q", "data"], project)
    assert _out(project / "data.dvc") == _out(PROJECT_ROOT / "data.dvc")
