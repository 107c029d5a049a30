"""The prediction log's writer: rows queued by the API, written in batches off its hot path.

The API must not wait for a database on its hot path, and must not grow without bound
when the database is slow. So ``record`` only appends a row to a bounded queue (a few
microseconds, never blocking) and ``record_answer`` even less: a tuple of the answer's raw
facts that the writer turns into the row (``answer_values``), so that a cheap endpoint's
event loop builds no dict, hashes nothing and serialises nothing. The writer sleeps on a
timer: every ``flush_interval_s`` (or when ``flush``/``close`` asks) it takes what is
queued and inserts it in one transaction per ``batch_size`` rows (``marketplace.core.db``:
SQLite in WAL mode with full sync by default, PostgreSQL on the stack). Nothing on the
hot path wakes it: a writer woken per row or per batch takes the GIL from the event loop
that often, which cost more-like-this 15-20 % of its throughput. What this can lose is
bounded and counted:

- a full queue drops the row (``dropped``, and the ``on_drop`` callback: a Prometheus
  counter and a warning in the API);
- a failed write is retried with the next batch while the queue holds; rows that still
  cannot be written at shutdown, or that the database refuses on their own, are counted
  in ``lost``;
- a clean ``close`` writes everything queued before it returns (0 rows lost); a kill -9
  loses what was queued since the last write: at most ``flush_interval_s`` of answers
  plus the batch being written.

With ``process=True`` the building and writing run in a child process (spawned at
``start``): the API's thread only pickles what is queued and sends it down a pipe once per
interval, so the log takes almost no GIL time from the event loop (a thread that builds
and writes rows holds it ~20 µs a row). The child acknowledges each batch with the counts
above; a kill -9 of the API leaves the child to write what it was sent (it sees the pipe
close), so the bound is the same; a child that dies is replaced by the thread writer.

``flush`` waits until every row recorded before the call is written (or counted lost):
feedback on an answer given a moment ago looks its request id up after a flush.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import sqlalchemy as sa

from marketplace.core import db
from marketplace.mlops import log_schema

log = logging.getLogger(__name__)

COLUMNS = tuple(c.name for c in log_schema.predictions.columns if c.name != "id")
Row = dict[str, Any]
Values = tuple[Any, ...]  # a row as inserted: one value per column of ``COLUMNS``
SQLITE_ROWS = 40  # rows per INSERT statement on SQLite (20 columns: 800 of its 32,766 variables)


def vector_bytes(vector: np.ndarray | None) -> bytes | None:
    """A frozen encoder's vector as stored in the log: float16 bytes (``None`` stays)."""
    return None if vector is None else np.asarray(vector, dtype=np.float16).tobytes()


def vector_from_bytes(data: bytes | None) -> np.ndarray | None:
    """The float32 vector back from ``vector_bytes`` (for readers: the monitor)."""
    return None if data is None else np.frombuffer(data, dtype=np.float16).astype(np.float32)


def top_k_json(items: Sequence[Any]) -> str:
    """``top_k`` as stored: ``[[category, p], ...]`` (predict) or product ids (similar)."""
    return json.dumps(items, separators=(",", ":"))


def client_hash(key: str, salt: bytes) -> str:
    """A client's key as stored and routed on: a keyed BLAKE2b digest (32 hex digits)."""
    return hashlib.blake2b(key.encode(), key=salt, digest_size=16).hexdigest()


# What ``record_answer`` queues: the raw facts of a served answer, in this order.
ANSWER_FIELDS = (
    "request_id", "ts", "endpoint", "model_name", "model_version", "client",
    "latency_ms", "query_kind", "top_k", "category", "probability",
)  # fmt: skip
_AT = {c: i for i, c in enumerate(COLUMNS)}
_ANSWER_AT = [_AT[c] for c in ANSWER_FIELDS]
_ROLE_AT, _CLIENT_AT, _TOP_AT = _AT["role"], _AT["client"], _AT["top_k"]


def answer_values(raw: tuple, salt: bytes) -> Values:
    """A ``record_answer`` tuple as the row's column values: the client key hashed, the
    ids as JSON, ``role = served`` (runs in the writer, not on the request)."""
    values: list[Any] = [None] * len(COLUMNS)
    for at, value in zip(_ANSWER_AT, raw, strict=True):
        values[at] = value
    values[_ROLE_AT] = "served"
    values[_CLIENT_AT] = client_hash(raw[5], salt)
    values[_TOP_AT] = top_k_json(raw[8])
    return tuple(values)


class PredictionLog:
    """A bounded queue of prediction rows and the thread (or process) that writes them.

    ``salt`` keys the client hash of ``record_answer`` rows (built by the writer)."""

    def __init__(
        self,
        url: str,
        *,
        queue_size: int = 10_000,
        flush_interval_s: float = 1.0,
        batch_size: int = 10_000,
        salt: bytes = b"",
        process: bool = False,
        on_drop: Callable[[int], None] | None = None,
        on_write: Callable[[int, float], None] | None = None,
    ) -> None:
        self.url = url
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size  # rows per transaction (a flush may write several)
        self.salt = salt
        self.process = process  # write in a child process (see the module docstring)
        self._child: Any = None  # the child process and our end of its pipe
        self._pipe: Any = None
        self._sent = 0  # rows handed to the child
        self._on_drop = on_drop  # told how many rows a full queue refused (1 at a time)
        self._on_write = on_write  # told each batch's size and seconds
        # A deque, not a queue.Queue: append and popleft are atomic and 30x cheaper than
        # the Queue's locks (this runs on every request); its bound is checked by hand.
        self.queue_size = queue_size
        self._queue: deque[Row | tuple] = deque()
        self._insert: str | None = None  # SQLite: a compiled multi-row INSERT (executemany)
        self._insert_one = ""  # and its one-row form, for a batch's last rows
        self._engine: sa.Engine | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._settled = threading.Condition()
        self._retry: list[Values] = []  # a batch whose write failed, tried again first
        self.recorded = 0  # rows accepted into the queue
        self.written = 0  # rows committed
        self.dropped = 0  # rows a full queue refused
        self.lost = 0  # rows accepted but never written (the database failed until close)
        self.failures = 0  # failed batch writes
        self._last_drop_warning = 0.0

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> PredictionLog:
        """Create the tables where missing and start the writer thread (and process)."""
        self._engine = db.engine(self.url)
        log_schema.create(self._engine)
        self.start_statements()
        if self.process:
            self._spawn()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def start_statements(self) -> None:
        """Compile SQLite's multi-row INSERT (the writer's, in this process or the child)."""
        assert self._engine is not None
        if self._engine.dialect.name == "sqlite":
            # The DBAPI's executemany on tuples costs a third of SQLAlchemy's per-row
            # parameter handling; PostgreSQL keeps SQLAlchemy's multi-row VALUES batches.
            statement = log_schema.predictions.insert().values(
                {c: sa.bindparam(c) for c in COLUMNS}
            )
            compiled = statement.compile(dialect=self._engine.dialect)
            assert tuple(compiled.positiontup or ()) == COLUMNS
            # Many rows per statement: sqlite3 releases and retakes the GIL around every
            # statement step, and a writer doing that once per row takes the GIL from the
            # event loop once per row (the convoy effect: -17 % on more-like-this).
            head, values = str(compiled).split(" VALUES ")
            self._insert = f"{head} VALUES {', '.join([values] * SQLITE_ROWS)}"
            self._insert_one = str(compiled)

    def _spawn(self) -> None:
        # spawn, not fork: the API has threads (and torch's) that a fork would copy mid-work.
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self._child = context.Process(
            target=_child_main,
            args=(self.url, theirs, self.salt, self.batch_size),
            name="prediction-log-writer",
            daemon=True,
        )
        self._child.start()
        theirs.close()
        self._pipe = ours

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the thread (a clean shutdown loses nothing)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("prediction log: the writer did not finish within %.0f s", timeout)
        self._thread = None
        if self._child is not None:
            self._child.join(timeout)
            if self._child.is_alive():
                self._child.terminate()
            self._child = None
        if self._engine is not None:
            self._engine.dispose()
        if self.dropped or self.lost:
            log.warning(
                "prediction log closed: %d rows written, %d dropped (queue full), %d lost",
                self.written,
                self.dropped,
                self.lost,
            )

    @property
    def engine(self) -> sa.Engine:
        assert self._engine is not None, "start() the log first"
        return self._engine

    # -- producers ---------------------------------------------------------------------

    def record(self, row: Row) -> bool:
        """Queue one row (never blocks); ``False`` when the queue was full (counted).

        Called from one thread (the API's event loop). Wakes nobody: the writer comes by
        on its timer."""
        if len(self._queue) >= self.queue_size:
            self._dropped()
            return False
        self._queue.append(row)
        self.recorded += 1
        return True

    def record_answer(self, *raw: Any) -> bool:
        """Queue a served answer's raw facts (``ANSWER_FIELDS``: the client's key, not its
        hash; the result ids, not their JSON): the hot path's cheapest form, one small
        tuple; the writer builds the row (``answer_values``)."""
        if len(self._queue) >= self.queue_size:
            self._dropped()
            return False
        self._queue.append(raw)
        self.recorded += 1
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row recorded before this call is written or counted lost;
        ``False`` on timeout (the database is slow or down)."""
        target = self.recorded
        deadline = time.monotonic() + timeout
        with self._settled:
            while self.written + self.lost < target:
                if self._thread is None or not self._thread.is_alive():
                    return False
                self._wake.set()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._settled.wait(min(remaining, 0.05))
        return True

    @property
    def pending(self) -> int:
        """Rows waiting to be written."""
        if self._pipe is not None:
            return len(self._queue) + self._sent - self.written - self.lost
        return len(self._queue) + len(self._retry)

    def _dropped(self) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(1)
        now = time.monotonic()
        if now - self._last_drop_warning > 10:  # one line per 10 s, not one per row
            self._last_drop_warning = now
            log.warning(
                "prediction log queue full (%d rows): dropping rows; %d dropped so far",
                self.queue_size,
                self.dropped,
            )

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        # A fixed-rate timer: a row waits at most flush_interval_s for its write to start,
        # however long the previous write took.
        due = time.monotonic() + self.flush_interval_s
        while True:
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
            now = time.monotonic()
            if now >= due:  # the timer (not flush/close): the next one; at once if behind
                due = max(due + self.flush_interval_s, now)
            stopping = self._stopping.is_set()
            if self._pipe is not None:
                self._ship(final=stopping)
            else:
                self._drain(final=stopping)
            if stopping:
                return

    def _ship(self, final: bool) -> None:
        """Hand what is queued to the child (one pickle, one pipe write) and take its
        counts back; the child writing while this thread waits costs the API no GIL."""
        items = [self._queue.popleft() for _ in range(len(self._queue))]
        unsettled = self._sent - self.written - self.lost
        if not items and not unsettled and not final:
            return
        try:
            self._pipe.send_bytes(pickle.dumps(items, pickle.HIGHEST_PROTOCOL))
            self._sent += len(items)
            written, lost, failures = self._pipe.recv()
            if final:  # an empty message: write everything (or count it lost), then exit
                self._pipe.send_bytes(b"")
                written, lost, failures = self._pipe.recv()
        except (OSError, EOFError) as exc:  # the child died: this thread writes from now on
            log.error("prediction log: the writer process failed (%s); writing in-thread", exc)
            self._pipe = None
            lost = self._sent - self.written - self.lost  # what it had, unacknowledged
            self._settle(lost=lost)
            self._queue.extendleft(reversed(items))
            self._drain(final=final)
            return
        self.failures = failures
        new_written = written - self.written
        self._settle(written=new_written, lost=lost - self.lost)
        if new_written and self._on_write is not None:
            self._on_write(new_written, 0.0)

    def _drain(self, final: bool) -> None:
        while True:
            batch = self._retry or self._values(self._take())
            if not batch:
                if not self._queue:
                    return
                continue  # every row of that batch failed to build (counted lost)
            if self._write(batch):
                self._retry = []
                continue
            if final:  # the database is down at shutdown: count what it never got
                lost = len(batch) + len(self._queue)
                self._retry = []
                self._queue.clear()
                self._settle(lost=lost)
                log.error("prediction log: %d rows could not be written at shutdown", lost)
            else:
                self._retry = batch  # try again at the next wake-up
            return

    def _take(self) -> list[Row | tuple]:
        batch: list[Row | tuple] = []
        pop = self._queue.popleft
        try:
            for _ in range(min(self.batch_size, len(self._queue))):
                batch.append(pop())
        except IndexError:  # empty
            pass
        return batch

    def _values(self, items: list[Row | tuple]) -> list[Values]:
        """The rows' column values: dicts read by column, raw tuples built (here, in the
        writer thread). A row that cannot be built is counted lost, with its reason."""
        values: list[Values] = []
        failed = 0
        for item in items:
            if type(item) is dict:
                values.append(tuple(map(item.get, COLUMNS)))
                continue
            try:
                values.append(answer_values(item, self.salt))
            except Exception as exc:
                failed += 1
                if failed == 1:
                    log.error("prediction log: a queued row could not be built: %r", exc)
        if failed:
            self._settle(lost=failed)
        return values

    def _write(self, batch: list[Values]) -> bool:
        """Insert ``batch`` in one transaction; ``False`` (rows kept for a retry) when the
        database refuses it. A batch that fails whole but partly succeeds row by row had
        bad rows (too long a value, say): those are counted lost, not retried forever."""
        started = time.perf_counter()
        try:
            with self.engine.begin() as connection:
                if self._insert is not None:
                    full = len(batch) - len(batch) % SQLITE_ROWS
                    chunks = [
                        tuple(chain.from_iterable(batch[i : i + SQLITE_ROWS]))
                        for i in range(0, full, SQLITE_ROWS)
                    ]
                    if chunks:
                        connection.exec_driver_sql(self._insert, chunks)
                    if full < len(batch):
                        connection.exec_driver_sql(self._insert_one, batch[full:])
                else:  # every row every column (rows of different endpoints differ)
                    rows = [dict(zip(COLUMNS, v, strict=True)) for v in batch]
                    connection.execute(log_schema.predictions.insert(), rows)
        except Exception as exc:  # any database failure: keep the rows, say why
            self.failures += 1
            log.error("prediction log: writing %d rows failed: %s", len(batch), exc)
            rows = [dict(zip(COLUMNS, v, strict=True)) for v in batch]
            written = self._write_one_by_one(rows)
            if not written:
                return False  # the database is down: try the whole batch again later
            self._settle(written=written, lost=len(rows) - written)
            return True
        self._settle(written=len(batch))
        if self._on_write is not None:
            self._on_write(len(batch), time.perf_counter() - started)
        return True

    def _write_one_by_one(self, rows: list[Row]) -> int:
        written = 0
        for row in rows:
            try:
                with self.engine.begin() as connection:
                    connection.execute(log_schema.predictions.insert(), row)
                written += 1
            except Exception as exc:
                log.error("prediction log: row of request %s refused: %s", row["request_id"], exc)
        if written and self._on_write is not None:
            self._on_write(written, 0.0)
        return written

    def _settle(self, written: int = 0, lost: int = 0) -> None:
        with self._settled:
            self.written += written
            self.lost += lost
            self._settled.notify_all()


def known_request(engine: sa.Engine, request_id: str) -> Mapping[str, Any] | None:
    """The served row of ``request_id`` (``None`` if the log has none)."""
    table = log_schema.predictions
    query = (
        sa.select(table.c.request_id, table.c.endpoint, table.c.model_version, table.c.query_kind)
        .where(table.c.request_id == request_id, table.c.role == "served")
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    return None if row is None else dict(row)


def _child_main(url: str, pipe: Any, salt: bytes, batch_size: int) -> None:
    """The writer process: rows in by the pipe, written as the thread writer writes them
    (same batches, retries, counts), the counts sent back after each batch. The pipe
    closing (the API exited, even by kill -9) or an empty message: write all, exit."""
    writer = PredictionLog(url, batch_size=batch_size, salt=salt)
    writer._engine = db.engine(url)
    writer.start_statements()
    final = False
    while not final:
        try:
            message = pipe.recv_bytes()
        except (EOFError, OSError):
            message, final = b"", True
        if message:
            items = pickle.loads(message)
            writer._queue.extend(items)
            writer.recorded += len(items)
        else:
            final = True
        writer._drain(final=final)
        try:
            pipe.send((writer.written, writer.lost, writer.failures))
        except OSError:
            final = True
    writer._drain(final=True)
    writer._engine.dispose()
