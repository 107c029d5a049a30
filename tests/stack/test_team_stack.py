"""The platform as a team runs it: everything through the tracking server's URL.

PostgreSQL is the registry's store, S3 holds the artifacts (proxied by the server as
``mlflow-artifacts:/``), the API knows only the server's URL, and the servers go away.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from ops.stack import Stack
from tests.helpers import running_api
from tests.helpers.stack import Remote, register_one

pytestmark = [pytest.mark.slow, pytest.mark.stack]

TOKEN = "stack-admin-token"


@pytest.fixture(scope="module")
def api(remote: Remote) -> Iterator[str]:
    """The API in the project folder, given nothing but the tracking server's URL."""
    credentials = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")
    assert not any(k in os.environ for k in credentials)  # only the server holds them
    with running_api(
        remote.stack.tracking_uri,
        env={"MARKETPLACE_MODEL_NAME": remote.name, "MARKETPLACE_ADMIN_TOKEN": TOKEN},
    ) as base:
        yield base


def test_the_registry_lives_in_postgres_and_s3(remote: Remote) -> None:
    import boto3
    import psycopg2

    client = MlflowClient(remote.stack.tracking_uri)
    version = client.get_model_version(remote.name, "1")
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert model.artifact_location.startswith("mlflow-artifacts:/")  # proxied, not a path
    conn = psycopg2.connect(remote.stack.postgres_uri.replace("+psycopg2", ""))
    with conn.cursor() as cursor:
        cursor.execute("SELECT version FROM model_versions WHERE name = %s", (remote.name,))
        assert [int(v) for (v,) in cursor.fetchall()] == [1]
    conn.close()
    env = remote.stack.s3_env()
    s3 = boto3.client(
        "s3",
        endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow")["Contents"]]
    assert any(key.endswith("weights.safetensors") for key in keys)
    assert any("/index/" in key for key in keys)


def test_the_api_serves_production_through_the_artifact_proxy(api: str, remote: Remote) -> None:
    model = httpx.get(f"{api}/model").json()
    assert (model["name"], model["version"], model["alias"]) == (remote.name, "1", "production")
    assert model["index_size"] == 39
    similar = httpx.post(f"{api}/similar", data={"text": "sofa dining table", "k": "3"}).json()
    assert len(similar["results"]) == 3 and similar["index"]["model_version"] == "1"
    with_photo = remote.listings.dropna(subset=["image_id"]).iloc[0]["product_id"]
    photo = httpx.get(f"{api}/products/{with_photo}/image")  # thumbnails came from S3
    assert photo.status_code == 200 and photo.content
    ready = httpx.get(f"{api}/health/ready").json()
    assert ready["registry"] == "reachable"


def test_predictions_go_on_while_the_registry_is_down(api: str, remote: Remote) -> None:
    """16 clients predict while the tracking server stops and comes back: none fails."""
    stack = remote.stack
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=api, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/predict", data={"text": "office desk chair"})
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                answered[0] += 1

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        time.sleep(0.5)
        stack.stop_service("mlflow")
        time.sleep(2.5)  # the probe's cache expires; requests keep coming
        ready = httpx.get(f"{api}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["registry"].startswith("registry unreachable at")
        refused = httpx.post(f"{api}/admin/reload", headers=auth, timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.json()["detail"].startswith("registry unreachable at")
        assert refused.json()["detail"].endswith("still serving version 1")
        during = answered[0]
        stack.start("mlflow")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:5]
    assert answered[0] > during > 0  # predictions were answered throughout
    time.sleep(2.1)  # the probe's cached "unreachable" expires
    assert httpx.get(f"{api}/health/ready").json()["registry"] == "reachable"
    reloaded = httpx.post(f"{api}/admin/reload", headers=auth, timeout=60)
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["reloaded"] and reloaded.json()["version"] == "1"


def test_twenty_concurrent_registrations_lose_nothing(stack: Stack, tmp_path: Path) -> None:
    # Forked from this process (mlflow already imported), so all 20 start in a second.
    start_at = time.time() + 2
    with multiprocessing.get_context("fork").Pool(20) as pool:
        results = pool.starmap(register_one, [(i, stack.tracking_uri, start_at) for i in range(20)])
    reported = dict(results)
    assert len(reported) == 20
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name("concurrency")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert {r.info.run_id for r in runs} == set(reported)  # no run lost
    versions = client.search_model_versions("name = 'concurrency'")
    assert sorted(int(v.version) for v in versions) == list(range(1, 21))  # none lost or twice
    assert {v.run_id: v.version for v in versions} == reported
    for run in runs:  # every run's artifact reached S3 through the proxy
        assert client.download_artifacts(run.info.run_id, "payload/model.txt", str(tmp_path))


def _promote_one(version: str, uri: str, start_at: float) -> str:
    """One promoter (a forked process): ``promoted <version>`` or ``refused <why>``."""
    from mlflow.utils.request_utils import _cached_get_request_session

    from marketplace.core.config import PromoteParams
    from marketplace.mlops.promotion import PromotionRefusedError, promote

    _cached_get_request_session.cache_clear()
    gate = PromoteParams(
        alias="production", metric="test_accuracy", tolerance=1.0, require_index=True
    )
    client = MlflowClient(uri, uri)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        return f"promoted {promote(client, 'race', version, gate).version}"
    except PromotionRefusedError as exc:
        return f"refused {exc}"


def test_concurrent_promotions_leave_one_consistent_history(stack: Stack) -> None:
    import json

    from marketplace.core.config import PromoteParams
    from marketplace.mlops.promotion import PromotionRefusedError, alias_lock, promote

    client = MlflowClient(stack.tracking_uri)
    client.create_registered_model("race")
    experiment = client.create_experiment("race")
    run = client.create_run(experiment)
    for accuracy in ("0.80", "0.81", "0.82"):
        version = client.create_model_version(
            "race", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        ).version
        client.set_model_version_tag("race", version, "test_accuracy", accuracy)
        client.set_model_version_tag("race", version, "index_size", "10")
    gate = PromoteParams(
        alias="production", metric="test_accuracy", tolerance=1.0, require_index=True
    )
    promote(client, "race", "1", gate)

    # Deterministic: while one promotion holds the lock, another is refused, unchanged.
    with (
        alias_lock(client, "race", "production"),
        pytest.raises(PromotionRefusedError, match="in progress"),
    ):
        promote(client, "race", "2", gate)
    assert client.get_registered_model("race").aliases["production"] == "1"

    # Two processes at the same moment: both succeed one after the other, or one is refused.
    start_at = time.time() + 1
    with multiprocessing.get_context("fork").Pool(2) as pool:
        outputs = pool.starmap(
            _promote_one, [(v, stack.tracking_uri, start_at) for v in ("2", "3")]
        )
    model = client.get_registered_model("race")
    history = json.loads(model.tags["production.history"])
    promoted = [o.split()[1] for o in outputs if o.startswith("promoted")]
    assert promoted, outputs
    assert model.aliases["production"] == history[-1]  # alias and history agree
    assert history == ["1", *sorted(promoted, key=lambda v: history.index(v))]
    for line in outputs:
        assert line.startswith("promoted") or "in progress" in line, line
    assert not client.search_model_versions("name = 'race.production.lock'")  # released


def test_s3_down_during_log_model_registers_nothing(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The artifact store fails mid-stage: a clear error, and no version without artifacts."""
    from marketplace.core.errors import StageError
    from tests.helpers.tiny import register

    client = MlflowClient(remote.stack.tracking_uri)
    before = {v.version for v in client.search_model_versions(f"name = '{remote.name}'")}
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail now, not in minutes
    splits, images, texts = remote.inputs
    remote.stack.stop_service("s3")
    try:
        with pytest.raises(StageError, match="no version of test-combined was registered"):
            register(remote.workdir, remote.listings, splits, images, texts, seed=7, index=False)
    finally:
        remote.stack.start("s3")
    after = {v.version for v in client.search_model_versions(f"name = '{remote.name}'")}
    assert after == before


def test_a_postgres_restart_during_a_training_run_loses_nothing(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL restarts after a stage has started its run and trained, just before it
    logs the model: the server's pool re-connects (pre-ping) and MLflow's bounded request
    retries carry the stage through; the version it registers is READY, with its files."""
    import tests.helpers.tiny as tiny

    client = MlflowClient(remote.stack.tracking_uri)
    before = {v.version for v in client.search_model_versions(f"name = '{remote.name}'")}
    log_and_register = tiny.log_and_register
    postgres = remote.stack.state["postgres"]["pid"]

    def restart_then_log(*args, **kwargs):
        remote.stack.stop_service("postgres")
        remote.stack.start("postgres")
        return log_and_register(*args, **kwargs)

    monkeypatch.setattr(tiny, "log_and_register", restart_then_log)
    splits, images, texts = remote.inputs
    version = tiny.register(
        remote.workdir, remote.listings, splits, images, texts, seed=11, index=False
    )
    assert remote.stack.state["postgres"]["pid"] != postgres  # it did restart
    registered = client.get_model_version(remote.name, str(version))
    assert registered.status == "READY"
    assert client.get_run(registered.run_id).info.status == "FINISHED"
    with tempfile.TemporaryDirectory() as folder:  # its files, through the artifact proxy
        local = mlflow.artifacts.download_artifacts(
            f"models:/{remote.name}/{version}", dst_path=folder
        )
        assert (Path(local) / "MLmodel").is_file()
    after = {v.version for v in client.search_model_versions(f"name = '{remote.name}'")}
    assert after == before | {str(version)}
