"""The ``marketplace`` console script, and what every command and DVC stage shares.

``marketplace <command> [args]`` (or ``python -m marketplace <command>``) runs one of the
commands in ``COMMANDS``; ``marketplace --help`` lists them and ``marketplace <command>
--help`` is the command's own help. Each command is a module with ``main(argv) -> int``
(so ``python -m <module>`` keeps working); the table names modules as strings and imports
the chosen one only, so ``marketplace --help`` loads no torch and the library imports no
entry point statically. The DVC stages are not commands: ``dvc repro`` runs them
(``python -m pipeline.<stage>``).

Expected failures (a bad ``params.yaml``, a malformed export) end with one clear line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Command:
    """One ``marketplace`` command: the module whose ``main(argv) -> int`` runs it."""

    module: str
    summary: str
    in_checkout: bool = False  # lives beside the library (serving/, ops/), not inside it


COMMANDS: dict[str, Command] = {
    "sample": Command("marketplace.data.sample", "write the built-in synthetic export (data/)"),
    "ingest": Command("marketplace.data.ingest", "import a real export into data/ (dvc add)"),
    "promote": Command(
        "marketplace.mlops.promotion", "move the production alias through the gate (--rollback)"
    ),
    "evaluate": Command(
        "marketplace.mlops.evaluation", "score a model on an unseen export, per query kind"
    ),
    "monitor": Command("marketplace.mlops.monitor", "drift and live accuracy of a version"),
    "ui": Command("marketplace.mlops.ui", "the MLflow UI on the project's tracking store"),
    "export-live": Command(
        "marketplace.search.export_live", "fold the live catalogue back into an export"
    ),
    "predict": Command("marketplace.inference", "query a registered model (category, similar)"),
    "serve": Command("serving.__main__", "the API (uvicorn)", in_checkout=True),
    "stack": Command("ops.stack", "the team stack: PostgreSQL, S3, MLflow (up, down, ...)", True),
}


def _parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="marketplace",
        description="Marketplace ranking: the commands beside the DVC pipeline (dvc repro).",
        epilog=f"commands:\n{listing}\n\n`marketplace <command> --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="command")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    return parser


def load_command(name: str) -> Callable[[list[str] | None], int | None]:
    """The ``main`` of command ``name``, imported now (never at the library's import)."""
    command = COMMANDS[name]
    if command.in_checkout and os.getcwd() not in sys.path:
        # serving/ and ops/ are the project's, beside src/: found from its checkout, as
        # ``python -m`` finds them (appended, so installed packages still come first).
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        if not command.in_checkout or exc.name != command.module.split(".")[0]:
            raise
        raise SystemExit(
            f"marketplace {name}: {command.module} is not here: run it from the project's "
            "checkout (the folder with serving/ and ops/)"
        ) from None
    return module.main


def main(argv: Sequence[str] | None = None) -> int:
    """``marketplace <command> [args]``: run one command; returns its exit code."""
    args = _parser().parse_args(argv)
    run_command = load_command(args.command)
    program = sys.argv[0]
    sys.argv[0] = f"marketplace {args.command}"  # so its argparse says `marketplace <command>`
    try:
        return run_command(list(args.args)) or 0
    finally:
        sys.argv[0] = program
