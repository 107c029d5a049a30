"""Promote a registered model version to production through a gate, or roll back.

    python -m pipeline.promote                    # newest version of the combined model
    python -m pipeline.promote --version 7        # a given version
    python -m pipeline.promote --version 7 --force   # skip the metric gate
    python -m pipeline.promote --rollback         # back to the previous production

The gate (``promote`` in params.yaml): the challenger's test metric must not be worse than
production's by more than the tolerance. Not a DVC stage: promoting is a decision, not a
derived file. The API picks the change up on ``POST /admin/reload`` (or by polling).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from marketplace.cli import exit_process, run
from marketplace.config import load_params

log = logging.getLogger("pipeline.promote")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("vision", "text", "combined"), default="combined")
    parser.add_argument("--version", help="version to promote (default: the newest)")
    parser.add_argument("--force", action="store_true", help="skip the metric gate")
    parser.add_argument("--rollback", action="store_true", help="back to the previous version")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def body() -> None:
        from mlflow import MlflowClient

        from marketplace.promotion import promote, rollback
        from marketplace.tracking import setup_tracking

        params = load_params(args.params)
        gate = params.promote
        if args.kind != "combined":  # only the served (combined) model carries an index
            gate = gate.model_copy(update={"require_index": False})
        setup_tracking()
        client = MlflowClient()
        name = getattr(params.registry, args.kind)
        if args.rollback:
            result = rollback(client, name, gate)
        else:
            result = promote(client, name, args.version, gate, force=args.force)
        log.info("%s", result.describe())

    return run(body, "pipeline.promote")


if __name__ == "__main__":
    exit_process(main())
