"""The catalogue log: write a listing change durably, read the changes back in order.

``CatalogueLog`` is the only code that touches ``catalogue_changes`` and
``catalogue_vectors`` (``catalogue_schema``) at serve time. A ``PUT`` or ``DELETE`` is one
transaction: the change row and, for a ``PUT``, the frozen encoders' vectors it was
embedded with; ``commit()`` returns only when the database has it on disk (SQLite WAL +
``synchronous=FULL``, or PostgreSQL), so the API answers 2xx after ``append`` returns.

Readers follow the log by ``seq``: ``changes_since(seq)`` gives the rows after ``seq`` in
order, without the photo bytes (the vectors are in the cache; ``image`` reads a photo
only when its vectors are missing). ``fold`` keeps the latest change per product, which
is all a replay needs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from marketplace.core.db import engine as make_engine
from marketplace.core.db import redacted
from marketplace.search import catalogue_schema as schema

PUT, DELETE = "put", "delete"
CATEGORY_SOURCES = ("seller", "model")
_LOCK_KEY = 0x6D6B7463  # the PostgreSQL advisory lock that orders the log's writers


def sha256(data: bytes | str) -> str:
    """Hex SHA-256 of bytes, or of a string's UTF-8."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass(frozen=True)
class Change:
    """One row of the log (the photo's bytes only when asked for)."""

    seq: int
    product_id: str
    op: str
    ts: float
    title: str | None = None
    description: str | None = None
    price: float | None = None
    location: str | None = None
    category: str | None = None
    category_source: str | None = None
    image_sha256: str | None = None
    image: bytes | None = field(default=None, repr=False)

    @property
    def has_image(self) -> bool:
        return self.image_sha256 is not None


@dataclass(frozen=True)
class Written:
    """What ``append`` committed: its ``seq`` and whether the product existed before it
    (by the log; ``None`` when the log never saw the product, so the built catalogue says)."""

    seq: int
    ts: float
    existed_in_log: bool | None


_COLUMNS = [c for c in schema.changes.c if c.name != "image"]


def _change(row: sa.Row, with_image: bool = False) -> Change:
    m = row._mapping
    return Change(
        seq=int(m["seq"]),
        product_id=m["product_id"],
        op=m["op"],
        ts=float(m["ts"]),
        title=m["title"],
        description=m["description"],
        price=m["price"],
        location=m["location"],
        category=m["category"],
        category_source=m["category_source"],
        image_sha256=m["image_sha256"],
        image=m["image"] if with_image else None,
    )


def fold(changes: Iterable[Change]) -> dict[str, Change]:
    """The latest change per product (a ``delete`` stays, to hide a built listing)."""
    latest: dict[str, Change] = {}
    for change in changes:
        latest[change.product_id] = change
    return latest


class CatalogueLog:
    """The log at ``url`` (``marketplace.core.db.default_url("catalogue")`` by default)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._postgres = self.engine.dialect.name == "postgresql"
        if self.engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"the catalogue log needs SQLite or PostgreSQL, not {redacted(url)}")
        schema.create(self.engine)

    def __repr__(self) -> str:
        return f"CatalogueLog({redacted(self.url)!r})"

    def dispose(self) -> None:
        self.engine.dispose()

    def append(
        self,
        product_id: str,
        op: str,
        *,
        fields: dict[str, object] | None = None,
        image: bytes | None = None,
        vectors: Sequence[tuple[str, str, np.ndarray]] = (),
    ) -> Written:
        """Commit one change (and the encoder vectors ``(content_sha256, encoder, vector)``
        it was made with, where not cached yet); durable when this returns."""
        if op not in (PUT, DELETE):
            raise ValueError(f"op must be {PUT!r} or {DELETE!r}, not {op!r}")
        ts = time.time()
        row = {"product_id": product_id, "op": op, "ts": ts, **(fields or {})}
        if image is not None:
            row |= {"image": image, "image_sha256": sha256(image)}
        with self.engine.begin() as conn:
            # The insert comes first: on SQLite it takes the write lock (waiting for another
            # writer) before anything is read, so no read snapshot has to be upgraded.
            if self._postgres:
                # Commit order must equal seq order, or a follower that has read up to seq
                # n would never see a smaller seq committed after it: one writer at a time.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            seq = conn.execute(sa.insert(schema.changes).values(**row)).inserted_primary_key[0]
            previous = conn.execute(
                sa.select(schema.changes.c.op)
                .where(schema.changes.c.product_id == product_id, schema.changes.c.seq < seq)
                .order_by(schema.changes.c.seq.desc())
                .limit(1)
            ).scalar()
            self._cache(conn, vectors)
        return Written(int(seq), ts, None if previous is None else previous == PUT)

    def _cache(self, conn: sa.Connection, vectors: Sequence[tuple[str, str, np.ndarray]]) -> None:
        """Insert vectors, skipping keys already there (another writer may add the same)."""
        rows = {
            (content, encoder): {
                "content_sha256": content,
                "encoder": encoder,
                "vector": np.asarray(vector, dtype=np.float32).tobytes(),
            }
            for content, encoder, vector in vectors
        }
        if not rows:
            return
        insert = (postgresql.insert if self._postgres else sqlite.insert)(schema.vectors)
        conn.execute(insert.on_conflict_do_nothing(), list(rows.values()))

    def cache_vectors(self, vectors: Sequence[tuple[str, str, np.ndarray]]) -> None:
        """Store encoder vectors computed on replay (a photo whose vectors were missing).
        Two processes may race to store the same key; the second copy is skipped."""
        with self.engine.begin() as conn:
            self._cache(conn, vectors)

    def cached_vectors(
        self, keys: Iterable[tuple[str, str]], batch: int = 500
    ) -> dict[tuple[str, str], np.ndarray]:
        """The cached vectors of ``(content_sha256, encoder)`` keys that have one."""
        table = schema.vectors
        keys = sorted(set(keys))
        found: dict[tuple[str, str], np.ndarray] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(keys), batch):
                chunk = keys[start : start + batch]
                rows = conn.execute(
                    sa.select(table.c.content_sha256, table.c.encoder, table.c.vector).where(
                        sa.tuple_(table.c.content_sha256, table.c.encoder).in_(chunk)
                    )
                )
                for content, encoder, vector in rows:
                    found[(content, encoder)] = np.frombuffer(vector, dtype=np.float32)
        return found

    def changes_since(self, seq: int = 0, limit: int | None = None) -> list[Change]:
        """The changes after ``seq``, in log order, without photo bytes."""
        query = (
            sa.select(*_COLUMNS)
            .where(schema.changes.c.seq > seq)
            .order_by(schema.changes.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_change(row) for row in conn.execute(query)]

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(schema.changes.c.seq))).scalar() or 0)

    def images(self, seqs: Iterable[int]) -> dict[int, bytes]:
        """The photos of the given changes (those that have one)."""
        seqs = sorted(set(seqs))
        table = schema.changes
        out: dict[int, bytes] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(seqs), 500):
                rows = conn.execute(
                    sa.select(table.c.seq, table.c.image).where(
                        table.c.seq.in_(seqs[start : start + 500]), table.c.image.is_not(None)
                    )
                )
                out.update({int(seq): bytes(image) for seq, image in rows})
        return out
