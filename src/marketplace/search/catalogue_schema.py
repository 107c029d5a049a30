"""The catalogue log's tables: every listing change the API acknowledged, in order.

``PUT /products/{id}`` and ``DELETE /products/{id}`` append a row to ``catalogue_changes``
and commit it before answering, so a 2xx means the change survives a crash. Every API
process replays the log (the latest row per product wins) onto the registry's index at
start and on reload, and follows it (rows with a higher ``seq``) to see what the other
processes acknowledged. ``python -m marketplace.search.export_live`` (the pipeline's way back)
folds the changes into the next export, after which the rows up to that ``seq`` can be
compacted away.

The photo travels in the row (as uploaded, at most the API's upload limit) so that the
change is one atomic write and the export can reproduce it; nothing else stores it.

``catalogue_vectors`` caches the frozen encoders' vectors of live listings, keyed by the
content hash and the encoder spec, so a reload or a new model version re-runs only the
heads (the encoders are the slow part), and a restart replays without re-encoding.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

changes = sa.Table(
    "catalogue_changes",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # log order
    sa.Column("product_id", sa.String(64), nullable=False, index=True),
    sa.Column("op", sa.String(8), nullable=False),  # put | delete
    sa.Column("ts", sa.Float, nullable=False),  # Unix seconds, when acknowledged
    sa.Column("title", sa.Text, nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("price", sa.Float, nullable=True),
    sa.Column("location", sa.Text, nullable=True),
    sa.Column("category", sa.String(64), nullable=True),  # root category, given or predicted
    sa.Column("category_source", sa.String(16), nullable=True),  # seller | model
    sa.Column("image", sa.LargeBinary, nullable=True),  # the photo's bytes as uploaded
    sa.Column("image_sha256", sa.String(64), nullable=True),
)

vectors = sa.Table(
    "catalogue_vectors",
    metadata,
    sa.Column("content_sha256", sa.String(64), primary_key=True),  # photo bytes or text
    sa.Column("encoder", sa.String(256), primary_key=True),  # the encoder spec's key
    sa.Column("vector", sa.LargeBinary, nullable=False),  # float32 bytes
)


def create(engine: sa.Engine) -> None:
    """Create the tables where missing (idempotent)."""
    metadata.create_all(engine)
