"""The live databases (catalogue log, prediction log): one SQLAlchemy engine per URL.

Serving writes what it acknowledges or answers into a database, and the offline commands
(export, monitor) read it back. A local SQLite file is the default; the team stack sets a
PostgreSQL URL (``python -m ops.stack env``). Both go through SQLAlchemy Core, so one table
definition serves both and no code spells a dialect's SQL.

SQLite is opened in WAL mode with ``synchronous=FULL``: a committed transaction is on disk
before ``commit()`` returns (what "durable before the 2xx" needs), readers never block the
writer, and two API processes on one file wait for each other (``busy_timeout``) instead
of failing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

LIVE_DIR = Path("live")  # default home of the SQLite files (git-ignored, never a DVC out)

# The environment variable that names each database, and its SQLite file by default.
DATABASES = {
    "catalogue": ("MARKETPLACE_CATALOGUE_URL", "catalogue.db"),
    "prediction_log": ("MARKETPLACE_PREDICTION_LOG_URL", "predictions.db"),
}


def default_url(name: str, environ: dict[str, str] | None = None) -> str:
    """The URL of database ``name``: its ``MARKETPLACE_*_URL``, else a file under ``live/``
    (``MARKETPLACE_LIVE_DIR`` moves that folder)."""
    env = os.environ if environ is None else environ
    variable, filename = DATABASES[name]
    if url := env.get(variable):
        return url
    folder = Path(env.get("MARKETPLACE_LIVE_DIR", LIVE_DIR))
    return f"sqlite:///{(folder / filename).resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for ``url``; a SQLite file's folder is created, and its pragmas set on
    every connection. ``kwargs`` go to ``sqlalchemy.create_engine``."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        created = sa.create_engine(url, **kwargs)
        sa.event.listen(created, "connect", _sqlite_pragmas)
        return created
    kwargs.setdefault("pool_pre_ping", True)  # a restarted PostgreSQL: reconnect, not fail
    return sa.create_engine(url, **kwargs)


def redacted(url: str) -> str:
    """``url`` with its password hidden, for logs and ``GET /model``."""
    return sa.make_url(url).render_as_string(hide_password=True)
