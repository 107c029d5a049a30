"""The prediction log's writer: batches, a bounded queue, flush, close, a failing database."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from marketplace.core import db
from marketplace.mlops import log_schema
from marketplace.mlops.prediction_log import (
    PredictionLog,
    client_hash,
    top_k_json,
    vector_bytes,
    vector_from_bytes,
)


def _row(i: int) -> dict:
    return {
        "request_id": f"r{i}",
        "ts": time.time(),
        "endpoint": "predict",
        "model_name": "m",
        "model_version": "1",
        "role": "served",
        "query_kind": "text",
        "category": "Appliances",
        "probability": 0.5,
        "top_k": top_k_json([["Appliances", 0.5]]),
        "text_vector": vector_bytes(np.arange(4, dtype=np.float32)),
    }


def _count(url: str) -> int:
    engine = db.engine(url)
    with engine.connect() as connection:
        n = connection.execute(sa.select(sa.func.count()).select_from(log_schema.predictions))
        return int(n.scalar_one())


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_rows_are_written_in_batches_and_close_loses_nothing(tmp_path: Path, process: bool) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    batches: list[int] = []
    log = PredictionLog(
        url,
        flush_interval_s=5,
        batch_size=100,
        process=process,
        on_write=lambda n, _: batches.append(n),
    )
    log.start()
    for i in range(250):
        assert log.record(_row(i))
    assert log.flush(timeout=10)  # without waiting for the 5 s interval
    assert _count(url) == 250 and max(batches) <= (250 if process else 100)
    for i in range(250, 300):
        log.record(_row(i))
    log.close()
    assert _count(url) == 300 and (log.written, log.dropped, log.lost) == (300, 0, 0)
    with db.engine(url).connect() as connection:
        blob = connection.execute(sa.select(log_schema.predictions.c.text_vector)).first()[0]
    assert vector_from_bytes(blob).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}", queue_size=10, on_drop=dropped.append)
    accepted = [log.record(_row(i)) for i in range(15)]  # the writer is not started yet
    assert accepted == [True] * 10 + [False] * 5
    assert log.dropped == 5 and sum(dropped) == 5
    log.start()
    log.close()
    assert log.written == 10


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_a_failing_database_keeps_the_rows_and_counts_them_lost_at_close(
    tmp_path: Path, process: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_interval_s=0.05, process=process).start()
    with log.engine.begin() as connection:  # the table goes away under the writer
        connection.execute(sa.text("DROP TABLE predictions"))
    log.record(_row(0))
    log.record(_row(1))
    assert not log.flush(timeout=0.5)
    started = time.monotonic()  # a writer process acknowledges once it has started
    while not log.failures and time.monotonic() - started < 30:
        time.sleep(0.05)
    assert log.failures >= 1 and log.pending == 2
    log.close()
    assert (log.written, log.lost) == (0, 2)


@pytest.mark.parametrize("percent", [5.0, 50.0])
def test_canary_share_is_the_percentage(percent: float) -> None:
    from serving.watch import client_hash, in_canary

    clients = [client_hash(f"client-{i}", b"salt") for i in range(20_000)]
    share = sum(in_canary(c, percent) for c in clients) / len(clients)
    assert abs(share - percent / 100) < 0.01
    assert client_hash("client-1", b"salt") == clients[1]  # sticky
    assert client_hash("client-1", b"other") != clients[1]  # the salt keys the hash


def test_rows_of_different_endpoints_share_a_batch_and_a_bad_row_is_counted(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_interval_s=5).start()
    product = {k: v for k, v in _row(1).items() if k != "text_vector"}  # fewer columns
    bad = {**_row(2), "ts": None}  # NOT NULL
    for row in (_row(0), product, bad, _row(3)):
        log.record(row)
    log.close()
    assert _count(url) == 3 and (log.written, log.lost) == (3, 1)


def test_the_writer_comes_on_its_timer_not_per_row(tmp_path: Path) -> None:
    """Nothing on the hot path wakes the writer (a wake-up takes the GIL from the event
    loop); it writes what is queued every flush_interval_s, the kill -9 bound."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_interval_s=0.6, batch_size=100).start()
    started = time.monotonic()
    for i in range(300):  # three batches' worth: no early wake-up either
        log.record(_row(i))
    time.sleep(0.2)
    early = log.written
    while log.written < 300 and time.monotonic() - started < 10:
        time.sleep(0.02)
    waited = time.monotonic() - started
    log.close()
    assert early == 0 and log.written == 300
    assert 0.5 <= waited <= 0.6 + 1.5  # the interval, plus a busy machine's slack


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_answers_are_built_by_the_writer_and_a_bad_one_is_counted(
    tmp_path: Path, process: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_interval_s=5, salt=b"salt", process=process).start()
    for i in range(45):  # a 40-row INSERT and 5 single rows
        ids = (f"p{i}", "p-other")
        assert log.record_answer(
            f"a{i}", float(i), "product_similar", "m", "1", "client-1", 1.5, "product",
            ids, "Appliances", 0.5,
        )  # fmt: skip
    log.record_answer("short")  # the writer cannot build it: lost, said, not retried
    log.record(_row(99))  # dict rows share the batch
    log.close()
    assert (log.written, log.lost) == (46, 1)
    table = log_schema.predictions
    with db.engine(url).connect() as connection:
        rows = connection.execute(sa.select(table).order_by(table.c.id)).mappings().all()
    answers = [r for r in rows if r["request_id"] != "r99"]
    assert [(r["request_id"], r["ts"]) for r in answers] == [(f"a{i}", float(i)) for i in range(45)]
    first = answers[0]
    assert first["client"] == client_hash("client-1", b"salt") and first["role"] == "served"
    assert json.loads(first["top_k"]) == ["p0", "p-other"] and first["probability"] == 0.5
    assert [r["request_id"] for r in rows].count("r99") == 1


def test_a_killed_api_leaves_the_writer_process_to_write_what_it_was_sent(
    tmp_path: Path,
) -> None:
    """kill -9 of the API: the child sees its pipe close and writes what it got."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_interval_s=0.1, process=True).start()
    for i in range(20):
        log.record(_row(i))
    assert log.flush(timeout=20)
    child = log._child
    log._pipe.close()  # what the API's death does to the pipe, without killing pytest
    child.join(20)
    assert child.exitcode == 0 and _count(url) == 20
