"""What every ``python -m pipeline.<stage>`` entry point shares: logging and exit codes.

Expected failures (a bad ``params.yaml``, a malformed export) end with one clear line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from marketplace.core.config import ConfigError
from marketplace.core.errors import StageError
from marketplace.data.export import MalformedExportError

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
    """End a stage's process with ``code``: a normal interpreter exit, minus its last
    garbage collections.

    ``gc.freeze()`` moves every object into the permanent generation, so the collections
    CPython runs while it finalises (with torch, MLflow and transformers loaded, most of a
    ~1.5 s teardown) skip them; the rest of a normal exit happens as usual: threads are
    joined, ``atexit`` handlers run, buffers are flushed. Measured by
    ``bench/bench_library_pieces.py`` (BENCHMARKS.md): teardown 1.5 s normal, 0.3 s
    frozen, per stage process; the head-only rerun runs two. Only for ``__main__``
    blocks: never call it from library code or tests.
    """
    gc.freeze()
    sys.exit(code)


def log_problems(log: logging.Logger, lines: list[str], report: str, limit: int = 20) -> None:
    """Warn about the first ``limit`` problems; the full list is in the report file."""
    for line in lines[:limit]:
        log.warning("%s", line)
    if len(lines) > limit:
        log.warning("... and %d more: every problem is listed in %s", len(lines) - limit, report)
