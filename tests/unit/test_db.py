"""The live databases' engine: SQLite in WAL mode with full sync, URLs from the environment."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from marketplace.core.db import default_url, engine, redacted
from marketplace.mlops import log_schema


def test_default_url_is_a_file_under_live_dir_unless_named(tmp_path: Path) -> None:
    env = {"MARKETPLACE_LIVE_DIR": str(tmp_path)}
    assert default_url("catalogue", env) == f"sqlite:///{tmp_path / 'catalogue.db'}"
    env["MARKETPLACE_PREDICTION_LOG_URL"] = "postgresql+psycopg2://u:secret@h:5/db"
    assert default_url("prediction_log", env) == env["MARKETPLACE_PREDICTION_LOG_URL"]
    assert "secret" not in redacted(env["MARKETPLACE_PREDICTION_LOG_URL"])


def test_sqlite_engine_is_durable_and_concurrent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'log.db'}"
    db = engine(url)  # creates the folder
    log_schema.create(db)
    log_schema.create(db)  # idempotent
    with db.begin() as conn:
        conn.execute(log_schema.feedback.insert().values(request_id="r1", ts=1.0, category="x"))
    with engine(url).connect() as conn:  # a second engine (another process) sees the commit
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL
        rows = conn.execute(sa.select(log_schema.feedback.c.request_id)).scalars().all()
    assert rows == ["r1"]
