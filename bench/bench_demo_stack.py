"""make demo's commands on a small sample (6 listings per category), in a scratch clone,
through a team stack on free ports: dvc repro, promote, a query. Prints each command's
time and whether anything was written to a local store. Run:
``.venv/bin/python bench/bench_demo_stack.py``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from marketplace.data.sample import generate_sample  # noqa: E402
from ops.stack import running_stack  # noqa: E402
from tests.helpers import make_project_copy, venv_env  # noqa: E402

QUERY = ("--text", "Wooden dining table with four chairs", "--price", "80", "-k", "3")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="demo-stack-"))
    root.chmod(0o711)  # PostgreSQL runs as another user under root
    with running_stack(root / "stack") as stack:
        repo = make_project_copy(root / "repo")
        generate_sample(repo / "data", seed=0, per_category=6)
        env = {**venv_env(), "MLFLOW_TRACKING_URI": stack.tracking_uri}

        def sh(*cmd: str) -> None:
            started = time.perf_counter()
            result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
            print(
                f"$ {' '.join(cmd)}  rc={result.returncode}  {time.perf_counter() - started:.1f} s"
            )
            print(result.stdout[-600:], result.stderr[-1500:] if result.returncode else "")

        sh("dvc", "add", "-q", "data")
        sh("dvc", "repro")
        sh(sys.executable, "-m", "marketplace.mlops.promotion")
        sh(sys.executable, "-m", "marketplace.inference", *QUERY)
        for local in ("mlflow.db", "mlartifacts"):
            print(f"{local} in the clone: {(repo / local).exists()}")


if __name__ == "__main__":
    main()
