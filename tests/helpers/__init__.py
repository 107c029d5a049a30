"""Every helper the tests (and benchmarks) share: no test module imports another's.

Here: a scratch copy of the project (a fresh git + DVC repository holding this project's
pipeline definition and code, so `dvc repro` can run on any data without touching the
working tree's data/ or outputs/), running a command in it, and a real API process on a
free port. By concern:

- ``tests.helpers.tiny``: the tiny synthetic catalogue, its embeddings and model, the
  serving tests' registry (``Registry``, ``photo``, ``register``, ``serving_settings``);
- ``tests.helpers.monitor``: the drift monitor's world and replay;
- ``tests.helpers.stack``: the team stack's (can it run here, the model registered in it);
- ``tests.helpers.browser``: Chromium and the API the browser tests drive;
- ``tests.helpers.synthetic``: small unit-test inputs (params with one key changed, colour
  canvases, a toy product index).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from ops.stack import free_port  # one free-port helper for the stack, tests and benches

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "MLproject")
PROJECT_DIRS = ("pipeline", "src")


def venv_env() -> dict[str, str]:
    """The environment with this interpreter's bin first, so `python` and `dvc` match it."""
    env = dict(os.environ)
    # A scratch project's commands use its own store (mlflow.db beside it). MLflow 3's
    # set_tracking_uri also exports MLFLOW_TRACKING_URI (and set_experiment
    # MLFLOW_EXPERIMENT_ID), so an earlier test's store would otherwise leak into every later
    # subprocess (`mlflow run --experiment-name` refuses both at once).
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        env.pop(key, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command in ``cwd``; fail loudly with its output if it fails."""
    result = subprocess.run(cmd, cwd=cwd, env=venv_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def make_project_copy(root: Path) -> Path:
    """Copy the pipeline definition and code into ``root`` and make it a git + DVC repo."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy2(PROJECT_ROOT / name, root / name)
    for name in PROJECT_DIRS:
        shutil.copytree(
            PROJECT_ROOT / name,
            root / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
        )
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    return root


@contextlib.contextmanager
def api_process(
    tracking_uri: str, env: dict[str, str] | None = None, timeout: float = 120
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m serving`` (real uvicorn) on a free loopback port over the registry at
    ``tracking_uri``, ready; yields its base URL and process (a test may kill it itself),
    and stops it by its PID afterwards.

    ``env`` adds settings (``MARKETPLACE_MODEL_NAME``, ...).
    """
    port = free_port()
    server_env = {
        **venv_env(),
        "MARKETPLACE_TRACKING_URI": tracking_uri,
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning"],
        cwd=PROJECT_ROOT,
        env=server_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise AssertionError(f"server exited:\n{server.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready within {timeout:.0f} s")
            time.sleep(0.2)
        yield base, server
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


@contextlib.contextmanager
def running_api(
    tracking_uri: str, env: dict[str, str] | None = None, timeout: float = 120
) -> Iterator[str]:
    """``api_process``'s base URL alone."""
    with api_process(tracking_uri, env, timeout) as (base, _):
        yield base


@contextlib.contextmanager
def ray_cluster(root: Path, nodes: int = 2, cpus_per_node: int = 1) -> Iterator[dict[str, str]]:
    """A real Ray cluster on this machine: a head and ``nodes - 1`` more nodes, each with its
    own temp dir under ``root`` and HOME ``root/home`` (the head writes its auth token under
    ``~/.ray``). Yields the environment a driver needs (``RAY_ADDRESS``, token auth, HOME);
    afterwards every process the nodes started is killed by PID (SIGTERM, then SIGKILL:
    gcs_server and raylet ignore SIGTERM). Never ``ray stop``: it stops every Ray here.
    """
    import psutil

    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    env = {**venv_env(), "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{free_port()}"
    ray = str(Path(sys.executable).parent / "ray")
    common = ["--num-cpus", str(cpus_per_node), "--node-ip-address", "127.0.0.1", "--block"]
    common += ["--disable-usage-stats", "--object-store-memory", str(200 * 2**20)]
    starters: list[subprocess.Popen[bytes]] = []
    try:
        for node in range(nodes):
            where = (
                ["--head", "--port", address.split(":")[1], "--include-dashboard", "false"]
                if node == 0
                else ["--address", address]
            )
            temp = root / f"node{node}"  # Ray's socket paths must stay short
            starters.append(
                subprocess.Popen(
                    [ray, "start", *where, "--temp-dir", str(temp), *common],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait_for_nodes(env, address, node + 1)
        yield {**env, "RAY_ADDRESS": address}
    finally:
        processes = []
        for starter in starters:
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(starter.pid)
                processes += [parent, *parent.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=5)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=10)


def _wait_for_nodes(env: dict[str, str], address: str, count: int, timeout: float = 120) -> None:
    """Until the cluster at ``address`` has ``count`` live nodes (asked from a subprocess)."""
    probe = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False);"
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
        )
        if result.returncode == 0 and result.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster at {address} has not {count} nodes: {result.stderr}")
