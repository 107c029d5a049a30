"""Live evidence from the prediction log: accuracy on sellers' feedback, and agreement.

A seller who keeps or changes the suggested category tells us the right answer for that
request. Every model that answered the request (the served version, and a shadow version
that scored it off the hot path) is then judged on it: ``live_accuracy`` joins
``predictions`` with ``feedback`` on the request id, per version, role and query kind.
``agreement`` compares, request by request, what a shadow version said with what the
client was served. Both read through SQLAlchemy Core (SQLite or PostgreSQL alike), and
aggregate in the database: a window of millions of rows never comes into memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from marketplace.mlops.log_schema import feedback, predictions


@dataclass(frozen=True)
class LiveAccuracy:
    """Feedback-judged accuracy of one version's answers of one role and query kind."""

    model_version: str
    role: str  # served | shadow
    query_kind: str
    n: int  # answers with a category feedback
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None


@dataclass(frozen=True)
class Agreement:
    """How often a shadow version's top-1 category matched the served answer."""

    served_version: str
    shadow_version: str
    query_kind: str
    n: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.n if self.n else None


def _since(window_days: float | None, now: float | None) -> float | None:
    if window_days is None:
        return None
    return (time.time() if now is None else now) - window_days * 86400


def _latest_feedback() -> sa.Subquery:
    """The seller's last category per request (a seller may change their mind)."""
    last = (
        sa.select(feedback.c.request_id, sa.func.max(feedback.c.id).label("id"))
        .where(feedback.c.category.is_not(None))
        .group_by(feedback.c.request_id)
        .subquery()
    )
    return (
        sa.select(feedback.c.request_id, feedback.c.category)
        .join(last, feedback.c.id == last.c.id)
        .subquery()
    )


def live_accuracy(
    engine: sa.Engine,
    model_name: str,
    *,
    window_days: float | None = None,
    now: float | None = None,
) -> list[LiveAccuracy]:
    """Per (version, role, query kind): answers with category feedback and how many were
    right, over the answers of the last ``window_days`` (all when ``None``)."""
    fb = _latest_feedback()
    correct = sa.func.sum(sa.case((predictions.c.category == fb.c.category, 1), else_=0))
    query = (
        sa.select(
            predictions.c.model_version,
            predictions.c.role,
            predictions.c.query_kind,
            sa.func.count().label("n"),
            correct.label("correct"),
        )
        .join(fb, fb.c.request_id == predictions.c.request_id)
        .where(predictions.c.model_name == model_name)
        .where(predictions.c.endpoint == "predict")
        .group_by(predictions.c.model_version, predictions.c.role, predictions.c.query_kind)
    )
    if (since := _since(window_days, now)) is not None:
        query = query.where(predictions.c.ts >= since)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return sorted(
        (LiveAccuracy(str(v), str(r), str(k), int(n), int(c or 0)) for v, r, k, n, c in rows),
        key=lambda a: (a.model_version, a.role, a.query_kind),
    )


def agreement(
    engine: sa.Engine,
    model_name: str,
    *,
    window_days: float | None = None,
    now: float | None = None,
) -> list[Agreement]:
    """Per (served version, shadow version, query kind): requests both answered, and how
    many got the same top-1 category."""
    served = predictions.alias("served")
    shadow = predictions.alias("shadow")
    agreed = sa.func.sum(sa.case((served.c.category == shadow.c.category, 1), else_=0))
    query = (
        sa.select(
            served.c.model_version,
            shadow.c.model_version,
            served.c.query_kind,
            sa.func.count().label("n"),
            agreed.label("agreed"),
        )
        .join(shadow, shadow.c.request_id == served.c.request_id)
        .where(served.c.role == "served", shadow.c.role == "shadow")
        .where(served.c.model_name == model_name, served.c.endpoint == "predict")
        .group_by(served.c.model_version, shadow.c.model_version, served.c.query_kind)
    )
    if (since := _since(window_days, now)) is not None:
        query = query.where(served.c.ts >= since)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return sorted(
        (Agreement(str(a), str(b), str(k), int(n), int(c or 0)) for a, b, k, n, c in rows),
        key=lambda a: (a.served_version, a.shadow_version, a.query_kind),
    )


def version_accuracy(rows: list[LiveAccuracy], version: str) -> LiveAccuracy:
    """One version's accuracy over all its answers (served and shadow, every kind)."""
    mine = [r for r in rows if r.model_version == str(version)]
    return LiveAccuracy(
        str(version), "all", "all", sum(r.n for r in mine), sum(r.correct for r in mine)
    )
