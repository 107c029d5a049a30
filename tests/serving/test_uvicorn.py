"""One real server: ``python -m serving`` (uvicorn) on 127.0.0.1, queried over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx

from tests.helpers import PROJECT_ROOT, venv_env
from tests.serving.conftest import Registry


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_real_uvicorn_serves_the_production_model(registry: Registry) -> None:
    port = _free_port()
    env = {
        **venv_env(),
        "MARKETPLACE_TRACKING_URI": registry.uri,
        "MARKETPLACE_MODEL_NAME": registry.name,
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"server exited:\n{server.stdout.read()}"  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready within 90 s"
            time.sleep(0.3)
        predict = httpx.post(
            f"{base}/predict",
            files={"image": ("p.jpg", registry.photo, "image/jpeg")},
            data={"text": "office desk", "price": "40"},
            timeout=30,
        )
        assert predict.status_code == 200, predict.text
        assert predict.json()["model"] == {"name": registry.name, "version": "1"}
        similar = httpx.get(
            f"{base}/products/{registry.product_with_photo}/similar", params={"k": 3}, timeout=10
        )
        assert similar.status_code == 200 and len(similar.json()["results"]) == 3
        assert (
            httpx.get(f"{base}/openapi.json", timeout=10).json()["info"]["title"] == "marketplace"
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
