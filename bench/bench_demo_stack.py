"""make demo's commands on a small sample (6 listings per category), in a scratch clone,
through a team stack on free ports: dvc repro, promote, a query; prints each command's
time and whether anything was written to a local store. Run:
``.venv/bin/python bench/bench_demo_stack.py``.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]
from ops.stack import running_stack
from sample import generate_sample
from tests.helpers import make_project_copy, venv_env

root = Path(tempfile.mkdtemp(prefix="demo-stack-"))
root.chmod(0o711)
with running_stack(root / "stack") as stack:
    repo = make_project_copy(root / "repo")
    generate_sample(repo / "data", seed=0, per_category=6)
    env = {**venv_env(), "MLFLOW_TRACKING_URI": stack.tracking_uri}

    def sh(*cmd):
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        print(f"$ {' '.join(cmd)}  rc={r.returncode}  {time.perf_counter() - t:.1f} s")
        print(r.stdout[-600:], r.stderr[-1500:] if r.returncode else "")
        return r

    sh("dvc", "add", "-q", "data")
    sh("dvc", "repro")
    sh(sys.executable, "-m", "pipeline.promote")
    sh(
        sys.executable,
        "-m",
        "marketplace.inference",
        "--text",
        "Wooden dining table with four chairs",
        "--price",
        "80",
        "-k",
        "3",
    )
    print(
        "mlartifacts in repo:",
        (repo / "mlartifacts").exists(),
        " mlflow.db in repo:",
        (repo / "mlflow.db").exists(),
    )
