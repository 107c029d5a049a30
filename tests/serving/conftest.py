"""A real (tiny) registry for the serving tests: trained, logged, registered, indexed.

A synthetic catalogue of 39 listings (13 categories × 3, a coloured photo for most) is
embedded with the real packaged encoders, a combined model is trained on it with the
library's own training code, logged and registered in a sqlite MLflow store in a temp dir,
and its FAISS index is built and attached, exactly as the pipeline stages do. Versions:
1 and 2 carry an index (1 with listing photos, 2 without, as an older index); 3 has no
index (a model the service must refuse to swap in). The steps are tests.helpers.tiny's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import mlflow
import pytest

from marketplace.mlops.tracking import setup_tracking
from tests.helpers.tiny import MODEL, Registry, catalogue, embeddings, register


@pytest.fixture(scope="package")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    saved_uri = mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        setup_tracking(root)
        listings, splits, images_dir = catalogue(root)
        images, texts = embeddings(listings, images_dir)
        for seed, index in ((0, True), (1, True), (2, False)):
            register(root, listings, splits, images, texts, seed=seed, index=index)
        mlflow.MlflowClient().set_registered_model_alias(MODEL, "production", "1")
        with_photo = listings.dropna(subset=["image_id"]).iloc[0]
        yield Registry(
            uri,
            MODEL,
            listings,
            (images_dir / f"{with_photo['image_id']}.jpg").read_bytes(),
            str(with_photo["product_id"]),
        )
    finally:
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
        mlflow.set_tracking_uri(saved_uri)
        mlflow.set_registry_uri(saved_uri)
