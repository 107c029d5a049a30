"""The prediction log's tables: what serving writes for every answer, and feedback on it.

One table definition for the writer (the API, off its hot path) and the readers (the
monitor, live accuracy, promotion's live evidence), in SQLite by default and PostgreSQL
on the team stack (``marketplace.core.db``).

``predictions``: one row per model answer. A request answered by production and scored
by a shadow version has two rows with the same ``request_id``: ``role`` tells them apart
(``served`` for the answer the client got, ``shadow`` for one scored off the hot path).
The input itself is not kept (a seller's photo and words are not ours to store), only
a summary of it and the frozen encoders' vectors that the monitor's drift checks need.

``feedback``: what a seller or shopper told us about an answer, keyed by its request id:
the category the seller kept or chose, or the product they clicked.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),  # X-Request-ID
    sa.Column("ts", sa.Float, nullable=False, index=True),  # Unix seconds, when answered
    sa.Column("endpoint", sa.String(32), nullable=False),  # predict | similar | product_similar
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # served | shadow
    sa.Column("client", sa.String(64), nullable=True),  # hashed client key (canary routing)
    sa.Column("query_kind", sa.String(16), nullable=True),  # QUERY_KINDS, or "product"
    sa.Column("category", sa.String(64), nullable=True),  # top-1 predicted category
    sa.Column("probability", sa.Float, nullable=True),  # its probability
    sa.Column("top_k", sa.Text, nullable=True),  # JSON: [[category, p], ...] or product ids
    sa.Column("latency_ms", sa.Float, nullable=True),
    # The input, summarised
    sa.Column("text_chars", sa.Integer, nullable=True),
    sa.Column("image_bytes", sa.Integer, nullable=True),
    sa.Column("image_sha256", sa.String(64), nullable=True),
    sa.Column("price_present", sa.Boolean, nullable=True),
    # The frozen encoders' vectors of the input (float16 bytes), for embedding drift
    sa.Column("image_vector", sa.LargeBinary, nullable=True),
    sa.Column("text_vector", sa.LargeBinary, nullable=True),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("category", sa.String(64), nullable=True),  # the category the seller kept/chose
    sa.Column("clicked_product_id", sa.String(64), nullable=True),
)


def create(engine: sa.Engine) -> None:
    """Create the tables where missing (idempotent; every writer and reader calls it)."""
    metadata.create_all(engine)
