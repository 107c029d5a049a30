"""A lock with an owner and a lease, kept in the MLflow model registry itself.

Promotions and rollbacks of one alias must not interleave (a read-modify-write of the
alias and its history), and every promoter already talks to the registry, often only
through a tracking server's URL: so the lock lives there, with nothing else to run.

How it works: the lock is a registered model (``<name>.<alias>.lock``, created once);
each attempt to take it creates a *ticket*, a version of that model, tagged with its
holder (host, pid), when it was taken and when its lease expires. Version numbers are
handed out atomically by every MLflow store (the next number is the primary key), so
tickets are totally ordered: a ticket holds the lock when no lower ticket is live (not
released, lease not expired). A refused ticket is withdrawn at once. The holder renews
its lease every third of it from a background thread and withdraws its ticket on exit.

A holder that dies (``kill -9``, a lost machine) keeps nobody waiting longer than its
lease: its ticket then counts as expired and the next caller removes it. A holder that
could not renew in time (paused, cut off) has lost the lock; it learns so at its next
renewal and its ``with`` block raises ``LockLostError`` at exit, so the caller reports
the work as unsafe instead of done. Leases compare wall clocks: the hosts that promote
must agree on the time to within a small part of the lease (NTP does).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from marketplace.core.errors import StageError

LEASE_S = 60.0  # a promotion takes seconds; a dead holder blocks others at most this long
SOURCE = "lock:/ticket"  # a model version needs a source; a ticket has no artifacts


class LockHeldError(StageError):
    """Someone else holds the lock; the message names the holder, its age and lease."""


class LockLostError(StageError):
    """The lease ran out before it could be renewed: another caller may have taken over."""


@dataclass(frozen=True)
class Ticket:
    """One attempt to hold the lock (a version of the lock's registered model)."""

    version: int
    holder: str
    since: float
    expires: float
    token: str

    @classmethod
    def of(cls, version: Any) -> Ticket:
        tags = version.tags
        return cls(
            int(version.version),
            tags.get("holder", "unknown holder"),
            float(tags.get("since", 0)),
            float(tags.get("expires", 0)),
            tags.get("token", ""),
        )

    def live(self, now: float) -> bool:
        return self.expires > now

    def describe(self, now: float) -> str:
        return (
            f"{self.holder}, holding it for {now - self.since:.0f} s; its lease expires in "
            f"{max(0.0, self.expires - now):.0f} s unless renewed"
        )


def _create_lock_model(client: Any, lock: str, purpose: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client.get_registered_model(lock)
        return
    try:
        client.create_registered_model(lock, description=f"lock: {purpose} (versions: holders)")
    except MlflowException as exc:
        # Created by another caller meanwhile (SQL stores may word that as "does not
        # exist" while re-reading the row they collided with).
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            raise


def _tickets(client: Any, lock: str) -> list[Ticket]:
    return sorted(
        (Ticket.of(v) for v in client.search_model_versions(f"name = '{lock}'")),
        key=lambda t: t.version,
    )


def _withdraw(client: Any, lock: str, version: int) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # already removed as expired
        client.delete_model_version(lock, str(version))


@contextlib.contextmanager
def registry_lock(
    client: Any, lock: str, purpose: str, lease_s: float = LEASE_S
) -> Iterator[Ticket]:
    """Hold the registry lock named ``lock`` for the ``with`` block, or raise
    ``LockHeldError`` at once if a live holder has it. ``purpose`` words the messages."""
    if lease_s <= 0:
        raise ValueError(f"lease_s must be positive, got {lease_s}")
    _create_lock_model(client, lock, purpose)
    since = time.time()
    holder = f"{socket.gethostname()} pid {os.getpid()}"
    token = uuid.uuid4().hex
    created = client.create_model_version(
        lock,
        SOURCE,
        tags={
            "holder": holder,
            "since": f"{since:.3f}",
            "expires": f"{since + lease_s:.3f}",
            "token": token,
        },
        description=f"held while {purpose}",
    )
    mine = int(created.version)
    now = time.time()
    earlier = [t for t in _tickets(client, lock) if t.version < mine]
    for ticket in earlier:
        if not ticket.live(now):  # its holder died or lost it: clear it away
            _withdraw(client, lock, ticket.version)
    holders = [t for t in earlier if t.live(now)]
    if holders:
        _withdraw(client, lock, mine)
        raise LockHeldError(
            f"{purpose} is already in progress ({holders[0].describe(now)}); nothing was "
            "changed, retry when it has finished (a holder that died blocks nobody once "
            f"its lease runs out; the lock: registered model {lock!r})"
        )
    renewer = _Renewer(client, lock, mine, lease_s, since + lease_s)
    renewer.start()
    try:
        yield Ticket(mine, holder, since, renewer.expires, token)
    finally:
        renewer.stop()
        _withdraw(client, lock, mine)
    if renewer.lost:
        raise LockLostError(
            f"the lock for {purpose} was lost while held ({renewer.lost}); another caller may "
            "have changed the same thing meanwhile: check the result"
        )


class _Renewer(threading.Thread):
    """Extends the ticket's lease every third of it while the ``with`` block runs."""

    def __init__(self, client: Any, lock: str, version: int, lease_s: float, expires: float):
        super().__init__(name=f"lease {lock} v{version}", daemon=True)
        self.client, self.lock, self.version, self.lease_s = client, lock, version, lease_s
        self.expires = expires
        self.lost: str | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.lease_s / 3):
            now = time.time()
            if now >= self.expires:
                self.lost = f"lease expired {now - self.expires:.1f} s before it was renewed"
                return
            try:
                self.client.set_model_version_tag(
                    self.lock, str(self.version), "expires", f"{now + self.lease_s:.3f}"
                )
                self.expires = now + self.lease_s
            except Exception as exc:  # the registry is down: retry until the lease runs out
                if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                    self.lost = "its ticket was removed as expired"
                    return

    def stop(self) -> None:
        self._stopped.set()
        self.join()
