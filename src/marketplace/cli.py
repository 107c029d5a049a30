"""What every ``python -m pipeline.<stage>`` entry point shares: logging and exit codes.

Expected failures (a bad ``params.yaml``, a malformed export) end with one clear line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from marketplace.config import ConfigError
from marketplace.data.export import MalformedExportError
from marketplace.errors import StageError


EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    MalformedExportError,
    FileExistsError,
    StageError,
)


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped, one-line log records on stderr (called by entry points, never on import)."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run(main: Callable[[], None], name: str) -> int:
    """Run a stage's body with logging set up; map expected errors to exit code 2."""
    setup_logging()
    try:
        main()
    except EXPECTED_ERRORS as exc:
        logging.getLogger(name).error("%s", exc)
        return 2
    return 0


def exit_process(code: int) -> NoReturn:
    """End a stage's process with ``code`` once its work is done, skipping the teardown.

    CPython's finalisation frees every object of every loaded module one at a time; with
    torch, MLflow and transformers loaded that took about a second per stage (1.07 s of the
    index stage's 6.93 s, BENCHMARKS.md), memory the OS reclaims at once. What a normal exit
    does for correctness still happens first, in the interpreter's own order:
    ``threading._shutdown`` (threading's exit hooks, which stop idle thread pools, then
    joining every non-daemon thread), the ``atexit`` handlers (logging's flush, MLflow
    ending its runs), and flushing stdout and stderr. Only for ``__main__`` blocks: never
    call it from library code or tests.
    """
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def log_problems(log: logging.Logger, lines: list[str], report: str, limit: int = 20) -> None:
    """Warn about the first ``limit`` problems; the full list is in the report file."""
    for line in lines[:limit]:
        log.warning("%s", line)
    if len(lines) > limit:
        log.warning("... and %d more: every problem is listed in %s", len(lines) - limit, report)
