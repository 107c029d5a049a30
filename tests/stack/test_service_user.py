"""As root, the stack's PostgreSQL runs as its own user with that user's groups only.

A clone under a private folder opened with ``chmod o+x`` (``mktemp -d`` gives 0700) must
work: a process that kept root's gid would be checked against the folder's group bits
(none) instead of the "others" bit, and initdb would fail with EACCES.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

import psutil
import pytest

import ops.stack
from ops.stack import PG_SYSTEM_USER, Stack, _pg_bin
from tests.helpers.stack import runnable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.stack,
    pytest.mark.skipif(os.geteuid() != 0, reason="drops to another user only as root"),
]


def test_postgres_starts_through_a_folder_only_others_may_traverse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if reason := runnable():
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="marketplace-o+x-") as folder:
        private = Path(folder)
        private.chmod(0o701)  # `chmod o+x` on a `mktemp -d` folder: root's group may not enter
        (private / "pginstall").symlink_to(_pg_bin("postgres").parents[1])  # the clone's venv
        monkeypatch.setattr(ops.stack, "_pg_bin", lambda name: private / "pginstall" / "bin" / name)
        stack = Stack(private / "stack")
        stack.state["ephemeral"] = True
        try:
            stack.start("postgres", timeout=60)
            server = psutil.Process(stack.state["postgres"]["pid"])
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            assert set(server.uids()) == {entry.pw_uid}
            assert set(server.gids()) == {entry.pw_gid}  # not root's group
        finally:
            stack.stop_service("postgres")
