"""Score a model on an export nobody trained on, per query kind, as an MLflow evaluation run.

    python -m pipeline.evaluate --from path/to/export      # the production combined model
    python -m pipeline.evaluate --from export.zip --model models:/marketplace-vision/3
    python -m pipeline.evaluate --from path/to/export --url http://127.0.0.1:8000

Each product becomes the queries a client would send (its photo alone, its text alone,
both); the report (``--out``: metrics.json, predictions.csv, issues.csv) gives accuracy,
macro-F1, top-3, log-loss and expected calibration error per kind. The run is linked to
the model version it scored (MLflow 3's logged model), and the version is tagged with it.
Not a DVC stage: its input is outside the project.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from marketplace.cli import exit_process, run

log = logging.getLogger("pipeline.evaluate")
DEFAULT_MODEL = "models:/marketplace-combined@production"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        type=Path,
        help="export folder or .zip (Products.csv, Images.csv, images/)",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--model", default=None, help=f"a model URI (default {DEFAULT_MODEL})")
    target.add_argument("--url", help="a running API to score instead (its /predict)")
    parser.add_argument("--out", type=Path, default=Path("reports/evaluation"))
    parser.add_argument("--no-mlflow", action="store_true", help="write the report only")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def body() -> None:
        from marketplace.config import load_params
        from marketplace.evaluation import evaluate_export

        params = load_params(args.params).clean_tabular

        with tempfile.TemporaryDirectory(prefix="marketplace-eval-") as tmp:
            report = evaluate_export(
                args.source,
                model_uri=None if args.url else (args.model or DEFAULT_MODEL),
                url=args.url,
                params=params,
                out=args.out,
                log_to_mlflow=not args.no_mlflow,
                scratch=Path(tmp),
            )
        print(report.table())

    return run(body, "pipeline.evaluate")


if __name__ == "__main__":
    exit_process(main())
