"""The API keeps its published contract: schemathesis against a real uvicorn.

Every operation /openapi.json publishes (a new endpoint is covered by being there) is
generated in all four phases (valid and invalid requests) and every check runs: no 5xx,
every answer documented with its status, content type and schema, valid requests
accepted, invalid ones refused. The examples per operation are bounded to keep the
suite's time; ``st run`` with a larger ``--max-examples`` is the same check, deeper. A
hook (tests/serving/schemathesis_hooks.py) sends a real photo where a valid request has
one: the rule a JSON schema cannot state (its bytes must decode as JPEG, PNG or WebP).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, running_api, venv_env
from tests.helpers.tiny import Registry

pytestmark = [pytest.mark.slow, pytest.mark.server]

TOKEN = "contract-token"
# Every phase schemathesis has (examples, coverage: each boundary and invalid value of each
# field, fuzzing, stateful: chains of calls), over every operation /openapi.json publishes
# (new endpoints are covered by being in the schema). Examples per operation bounded for
# the suite's time budget; `st run` with a larger --max-examples is the same check, deeper.
PHASES = "examples,coverage,fuzzing,stateful"
EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "10"))


def test_the_api_keeps_its_published_contract(registry: Registry, tmp_path: Path) -> None:
    env = {
        # Its own live databases: the fuzzer's PUT/DELETE never reach other tests' catalogue
        "MARKETPLACE_LIVE_DIR": str(tmp_path),
        "MARKETPLACE_MODEL_NAME": registry.name,
        "MARKETPLACE_ADMIN_TOKEN": TOKEN,
        "MARKETPLACE_CATALOGUE_TOKEN": TOKEN,  # one header for /admin and listing changes
    }
    with running_api(registry.uri, env=env) as base:
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                *("run", f"{base}/openapi.json", "--checks", "all", "--no-color"),
                *("--phases", PHASES, "--max-examples", str(EXAMPLES), "--seed", "13"),
                *("--header", f"Authorization: Bearer {TOKEN}"),
            ],
            cwd=PROJECT_ROOT,
            env={
                **venv_env(),
                "SCHEMATHESIS_HOOKS": "tests.serving.schemathesis_hooks",
                "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "src")]),
            },
            capture_output=True,
            text=True,
            timeout=600,
        )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "passed" in report and "failed" not in report.split("SUMMARY")[-1]


def test_a_405_names_every_method_of_its_path() -> None:
    """One route per method (GET, PUT, DELETE /products/{id}): Starlette's 405 named only
    the first route's; the schema (and RFC 9110) want the path's methods in ``Allow``."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    client = TestClient(create_app())  # no lifespan: routing answers before any model
    response = client.request("OPTIONS", "/products/p001")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PUT, DELETE"
    assert response.json() == {"detail": "Method Not Allowed", "status": 405}
    assert client.request("PATCH", "/feedback").headers["allow"] == "POST"
