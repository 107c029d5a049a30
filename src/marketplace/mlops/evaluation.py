"""Scoring a model on an export nobody trained on, query kind by query kind.

``marketplace.mlops.evaluation`` reads an export (the usual ``Products.csv``, ``Images.csv`` and
``images/``), turns each product into the queries a client would send (its photo alone,
its text alone, both), asks a registered model version or a running API for the category,
and reports accuracy, macro-F1, top-3, log-loss and calibration error per query kind. The
same cleaning code as the pipeline reads the tables, so a bad row or photo is reported
with its reason and skipped, never silently dropped.

The command (``marketplace evaluate``, or ``python -m marketplace.mlops.evaluation``)::

    marketplace evaluate --from path/to/export      # the production combined model
    marketplace evaluate --from export.zip --model models:/marketplace-vision/3
    marketplace evaluate --from path/to/export --url http://127.0.0.1:8000

The report (``--out``: metrics.json, predictions.csv, issues.csv); the run is linked to the
model version it scored (MLflow 3's logged model), and the version is tagged with it. Not a
DVC stage: its input is outside the project.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marketplace.cli import exit_process, run
from marketplace.compute.batches import chunks
from marketplace.core.config import CleanTabularParams
from marketplace.data.export import Issue
from marketplace.data.images import ImageError, decode_image
from marketplace.data.schema import IMAGES_DIR
from marketplace.data.tabular import clean_tables
from marketplace.features.preprocessing import listing_text
from marketplace.models.query import QUERY_KINDS, kind_slug
from marketplace.training.metrics import classification_metrics

log = logging.getLogger("marketplace.mlops.evaluation")

# The API answers at most this many listings per request; the model path batches more.
MODEL_BATCH = 32


@dataclass(frozen=True)
class Query:
    """One product of the export as one kind of query."""

    product_id: str
    kind: str
    category: str
    image: Path | None
    text: str | None
    price: float | None


@dataclass
class EvaluationSet:
    """The export as queries, and every row or photo that could not become one."""

    queries: list[Query]
    issues: list[Issue] = field(default_factory=list)
    products: int = 0


def read_queries(
    export_root: Path,
    categories: Sequence[str],
    params: CleanTabularParams,
    kinds: Sequence[str] = QUERY_KINDS,
) -> EvaluationSet:
    """Every product of the export as each query kind in ``kinds`` it can be.

    A product's photo is its first image row whose file decodes; a product without one
    is a text query only (``missing_file`` / ``corrupt_image`` issues say why). A product
    whose root category the model does not know is skipped (``unknown_category``).
    """
    cleaned = clean_tables(export_root, params)
    issues = list(cleaned.issues)
    known = set(categories)
    queries: list[Query] = []
    products = 0
    for product_id, rows in cleaned.listings.groupby("product_id", sort=False):
        first = rows.iloc[0]
        products += 1
        if first["root_category"] not in known:
            issues.append(
                Issue(
                    "Products.csv",
                    0,
                    str(product_id),
                    "unknown_category",
                    f"{first['root_category']!r} is not one of the model's categories",
                    "dropped",
                )
            )
            continue
        photo = _first_photo(export_root, rows, issues)
        text = listing_text(_str(first["title"]), _str(first["description"]))
        price = None if pd.isna(first["price"]) else float(first["price"])
        for kind in kinds:
            wants_image, wants_text = kind != "text", kind != "image"
            if (wants_image and photo is None) or (wants_text and not text):
                continue
            queries.append(
                Query(
                    str(product_id),
                    kind,
                    str(first["root_category"]),
                    photo if wants_image else None,
                    text if wants_text else None,
                    # A photo-only query brings nothing but the photo.
                    price if wants_text else None,
                )
            )
    return EvaluationSet(queries, issues, products)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _first_photo(root: Path, rows: pd.DataFrame, issues: list[Issue]) -> Path | None:
    for image_id in rows["image_id"].dropna():
        path = root / IMAGES_DIR / f"{image_id}.jpg"
        try:
            decode_image(path)
        except ImageError as exc:
            issues.append(Issue("Images.csv", 0, str(image_id), exc.reason, exc.detail, "dropped"))
            continue
        return path
    return None


# A predictor maps queries to probabilities over its categories, row-aligned.
Predictor = Callable[[Sequence[Query]], np.ndarray]


def model_predictor(classifier: Any) -> Predictor:
    """Queries scored in-process by a ``ListingClassifier`` (what the API itself runs)."""

    def predict(queries: Sequence[Query]) -> np.ndarray:
        return classifier.predict_proba(
            images=[None if q.image is None else q.image.read_bytes() for q in queries],
            texts=[q.text for q in queries],
            prices=[q.price for q in queries],
        )

    return predict


def api_predictor(url: str, categories: Sequence[str], timeout: float = 60.0) -> Predictor:
    """Queries sent to a running API's ``POST /predict``, one multipart request each, with
    ``k`` = every category so that the log-loss sees the whole distribution."""
    import httpx

    # httpx logs every request at INFO: thousands of lines for an export. Only failures
    # matter here (they raise with the API's answer); evaluate() shows a progress bar.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
    position = {c: i for i, c in enumerate(categories)}

    def predict(queries: Sequence[Query]) -> np.ndarray:
        out = np.zeros((len(queries), len(categories)), dtype=np.float32)
        for row, q in enumerate(queries):
            data: dict[str, str] = {"k": str(len(categories))}
            if q.text is not None:
                data["text"] = q.text
            if q.price is not None:
                data["price"] = str(q.price)
            files = None if q.image is None else {"image": (q.image.name, q.image.read_bytes())}
            response = client.post("/predict", data=data, files=files)
            if response.status_code != 200:
                raise RuntimeError(
                    f"{url}/predict answered {response.status_code} for product "
                    f"{q.product_id} ({q.kind}): {response.text[:300]}"
                )
            body = response.json()
            if body["query"] != q.kind:
                raise RuntimeError(f"{url} scored a {q.kind} query as {body['query']!r}")
            for score in body["top_k"]:
                out[row, position[score["category"]]] = score["probability"]
        return out

    return predict


@dataclass
class EvaluationReport:
    """Per-kind metrics, each query's prediction, and the issues met on the way."""

    metrics: dict[str, float]
    predictions: pd.DataFrame
    issues: pd.DataFrame

    def table(self) -> str:
        """The per-kind figures as Markdown (what the command prints)."""
        lines = [
            "| query kind | n | accuracy | macro-F1 | top-3 | log-loss | ECE |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for kind in QUERY_KINDS:
            slug = kind_slug(kind)
            if f"{slug}_n" not in self.metrics:
                continue
            m = {k: self.metrics[f"{slug}_{k}"] for k in ("accuracy", "macro_f1")}
            lines.append(
                f"| {kind} | {int(self.metrics[f'{slug}_n'])} | {m['accuracy']:.4f} | "
                f"{m['macro_f1']:.4f} | {self.metrics[f'{slug}_top3_accuracy']:.4f} | "
                f"{self.metrics[f'{slug}_log_loss']:.4f} | {self.metrics[f'{slug}_ece']:.4f} |"
            )
        return "\n".join(lines)

    def save(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "metrics.json", folder / "predictions.csv", folder / "issues.csv"]
        paths[0].write_text(json.dumps(self.metrics, indent=2, sort_keys=True) + "\n")
        self.predictions.to_csv(paths[1], index=False, lineterminator="\n")
        self.issues.to_csv(paths[2], index=False, lineterminator="\n")
        return paths


def evaluate(
    queries: EvaluationSet, categories: Sequence[str], predict: Predictor
) -> EvaluationReport:
    """Score every query; metrics keyed ``<kind>_<metric>`` (``image_text_accuracy`` ...)."""
    if not queries.queries:
        raise ValueError("the export has no product that the model can be asked about")
    from tqdm.auto import tqdm

    position = {c: i for i, c in enumerate(categories)}
    scored = []
    # A progress bar on a terminal (none in logs or CI: disable=None).
    with tqdm(total=len(queries.queries), unit="query", desc="scoring", disable=None) as bar:
        for batch in chunks(queries.queries, MODEL_BATCH):
            scored.append(predict(batch))
            bar.update(len(batch))
    probabilities = np.concatenate(scored)
    labels = np.array([position[q.category] for q in queries.queries])
    kinds = np.array([q.kind for q in queries.queries])
    metrics: dict[str, float] = {"products": float(queries.products)}
    for kind in QUERY_KINDS:
        rows = kinds == kind
        if rows.any():
            metrics.update(
                classification_metrics(probabilities[rows], labels[rows], f"{kind_slug(kind)}_")
            )
    names = np.asarray(categories)
    predictions = pd.DataFrame(
        {
            "product_id": [q.product_id for q in queries.queries],
            "query": kinds,
            "actual": [q.category for q in queries.queries],
            "predicted": names[probabilities.argmax(axis=1)],
            "confidence": probabilities.max(axis=1).round(6),
        }
    )
    issues = pd.DataFrame(
        [vars(i) for i in queries.issues],
        columns=["file", "line", "record_id", "reason", "detail", "action"],
    )
    return EvaluationReport(metrics, predictions, issues)


def _parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` or ``models:/name/version`` -> (name, alias, version)."""
    if not uri.startswith("models:/"):
        raise ValueError(f"expected models:/<name>@<alias> or models:/<name>/<version>: {uri!r}")
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    name, _, version = rest.partition("/")
    if not version:
        raise ValueError(f"{uri!r} names no version or alias")
    return name, None, version


def _registered_version(client: Any, name: str, alias: str | None, version: str | None) -> Any:
    if alias is not None:
        return client.get_model_version_by_alias(name, alias)
    return client.get_model_version(name, str(version))


def evaluate_export(
    source: Path,
    *,
    model_uri: str | None,
    url: str | None,
    params: CleanTabularParams,
    out: Path,
    log_to_mlflow: bool,
    scratch: Path,
) -> EvaluationReport:
    """Read ``source`` (folder or .zip) as the pipeline cleans exports (``params``), score
    it with the model at ``model_uri`` or the API at ``url``, write the report into ``out``
    and, unless told not to, log an evaluation run linked to the scored model version.
    Returns the report."""
    import mlflow
    from mlflow import MlflowClient

    from marketplace.data.ingest import find_export_root, safe_extract
    from marketplace.mlops.registry import logged_model_id
    from marketplace.mlops.tracking import setup_tracking, standard_tags

    setup_tracking()
    client = MlflowClient()
    if source.is_file():
        safe_extract(source, scratch / "export")
        root = find_export_root(scratch / "export")
    else:
        root = find_export_root(source)

    version: Any = None
    if url is not None:
        import httpx

        served = httpx.get(f"{url.rstrip('/')}/model", timeout=30).raise_for_status().json()
        name, number, categories = served["name"], served["version"], served["categories"]
        kinds: Sequence[str] = QUERY_KINDS
        predict = api_predictor(url, categories)
        try:
            version = client.get_model_version(name, number)
        except Exception as exc:  # another registry: score it, link nothing
            log.warning(
                "%s/%s is not in this tracking store (%s): run not linked", name, number, exc
            )
    else:
        from marketplace.inference import package_dir
        from marketplace.models.classifier import ListingClassifier

        assert model_uri is not None
        name, alias, number = _parse_model_uri(model_uri)
        version = _registered_version(client, name, alias, number)
        number = str(version.version)
        local = mlflow.artifacts.download_artifacts(
            f"models:/{name}/{number}", dst_path=str(scratch / "model")
        )
        classifier = ListingClassifier.load(package_dir(Path(local)))
        categories = list(classifier.categories)
        kinds = {"vision": ("image",), "text": ("text",)}.get(classifier.package.kind, QUERY_KINDS)
        predict = model_predictor(classifier)

    queries = read_queries(root, categories, params, kinds)
    log.info(
        "%s: %d products -> %d queries (%d issues); scoring %s version %s",
        root,
        queries.products,
        len(queries.queries),
        len(queries.issues),
        name,
        number,
    )
    report = evaluate(queries, categories, predict)
    paths = report.save(out)
    if log_to_mlflow:
        model_id = None
        if version is not None:
            try:
                model_id = logged_model_id(version)
            except LookupError:
                model_id = None
        tags = {
            **standard_tags("evaluate"),
            "model_name": name,
            "model_version": str(number),
            "evaluated_via": "api" if url else "model",
            "export": str(source),
        }
        with mlflow.start_run(run_name=f"evaluate {name}/{number}", tags=tags) as active:
            mlflow.log_input(
                mlflow.data.from_pandas(report.predictions, name=root.name), context="evaluation"
            )
            mlflow.log_metrics(report.metrics, model_id=model_id)
            for path in paths:
                mlflow.log_artifact(str(path), artifact_path="evaluation")
        if version is not None:
            client.set_model_version_tag(
                name, str(number), f"evaluation.{root.name}", active.info.run_id
            )
            from marketplace.mlops.model_card import refresh_links

            refresh_links(client, name, str(number))  # the card links its evaluations
    return report


# The command line ------------------------------------------------------------
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
        from marketplace.core.config import load_params

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

    return run(body, "marketplace.mlops.evaluation")


if __name__ == "__main__":
    exit_process(main())
