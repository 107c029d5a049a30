"""The prediction log's writer: rows queued by the API, written in batches by one thread.

The API must not wait for a database on its hot path, and must not grow without bound
when the database is slow. So ``record`` only appends a row to a bounded queue (a few
microseconds, never blocking) and ``record_raw`` even less: a tuple of the request's raw
facts that the writer thread turns into the row (``build``), so that a cheap endpoint's
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

``flush`` waits until every row recorded before the call is written (or counted lost):
feedback on an answer given a moment ago looks its request id up after a flush.
"""

from __future__ import annotations

import json
import logging
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


class PredictionLog:
    """A bounded queue of prediction rows and the thread that writes them in batches.

    ``build`` turns what ``record_raw`` queued (a tuple) into a row's ``Values``; it runs in
    the writer thread. A row it fails on is counted lost (and said why), not retried."""

    def __init__(
        self,
        url: str,
        *,
        queue_size: int = 10_000,
        flush_interval_s: float = 1.0,
        batch_size: int = 10_000,
        build: Callable[[tuple], Values] | None = None,
        on_drop: Callable[[int], None] | None = None,
        on_write: Callable[[int, float], None] | None = None,
    ) -> None:
        self.url = url
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size  # rows per transaction (a flush may write several)
        self._build = build
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
        """Create the tables where missing and start the writer thread."""
        self._engine = db.engine(self.url)
        log_schema.create(self._engine)
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
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

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

    def record_raw(self, raw: tuple) -> bool:
        """Queue a tuple that the writer's ``build`` turns into the row: the hot path's
        cheapest form (one small tuple of what the request knew, nothing computed)."""
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
            self._drain(final=stopping)
            if stopping:
                return

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
                assert self._build is not None, "record_raw needs a log with build="
                values.append(self._build(item))
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
