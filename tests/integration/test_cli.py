"""The stage entry points as a user meets them: exit codes and messages, ingest + DVC."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from marketplace.data.sample import generate_sample
from tests.helpers import PROJECT_ROOT, make_project_copy, run, venv_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _module(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=venv_env(), capture_output=True, text=True
    )


def test_bad_params_exit_2_naming_the_key(tmp_path: Path) -> None:
    shutil.copytree(PROJECT_ROOT / "pipeline", tmp_path / "pipeline")
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["split"]["sed"] = params["split"].pop("seed")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = _module(["pipeline.split"], tmp_path)
    assert result.returncode == 2
    assert "split.sed: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_ingest_zip_updates_data_dvc_and_refuses_a_broken_export(tmp_path: Path) -> None:
    project = make_project_copy(tmp_path / "project")
    export = tmp_path / "export"
    generate_sample(export, seed=5, per_category=2)
    archive = shutil.make_archive(
        str(tmp_path / "export"), "zip", root_dir=tmp_path, base_dir="export"
    )
    run([sys.executable, "-m", "marketplace.data.ingest", "--from", archive], project)
    (out,) = yaml.safe_load((project / "data.dvc").read_text())["outs"]
    files = sorted(p.relative_to(export) for p in export.rglob("*") if p.is_file())
    assert out["path"] == "data" and out["nfiles"] == len(files)
    assert (
        sorted(
            p.relative_to(project / "data") for p in (project / "data").rglob("*") if p.is_file()
        )
        == files
    )

    (export / "Images.csv").unlink()
    result = _module(["marketplace.data.ingest", "--from", str(export)], project)
    assert result.returncode == 2
    assert "Images.csv is missing" in result.stderr
    assert (project / "data" / "Images.csv").exists(), "the previous export is untouched"


def test_exit_process_finishes_what_a_normal_exit_would(tmp_path: Path) -> None:
    """Stages end with ``exit_process``: a normal exit after ``gc.freeze()``, so the work a
    normal exit does still happens (joining threads, atexit handlers, flushing buffered
    output), and an idle thread pool does not keep it waiting."""
    script = tmp_path / "stage.py"
    script.write_text(
        "import atexit, concurrent.futures, pathlib, sys, threading, time\n"
        "from marketplace.cli import exit_process\n"
        f"out = pathlib.Path({str(tmp_path)!r})\n"
        "def late():\n"
        "    time.sleep(0.3)\n"
        "    (out / 'thread.txt').write_text('done')\n"
        "threading.Thread(target=late).start()\n"
        "pool = concurrent.futures.ThreadPoolExecutor(1)\n"
        "pool.submit(int).result()  # its worker now idles on the queue\n"
        "atexit.register(lambda: (out / 'atexit.txt').write_text('ran'))\n"
        "sys.stdout.write('buffered, no newline')\n"
        "exit_process(3)\n"
    )
    env = {k: v for k, v in venv_env().items() if k != "PYTHONUNBUFFERED"}  # buffer stdout
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "buffered, no newline"
    assert (tmp_path / "thread.txt").read_text() == "done"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
