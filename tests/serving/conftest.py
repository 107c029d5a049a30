"""A real (tiny) registry for the serving tests: trained, logged, registered, indexed.

A synthetic catalogue of 39 listings (13 categories × 3, a coloured photo for most) is
embedded with the real packaged encoders, a combined model is trained on it with the
library's own training code, logged and registered in a sqlite MLflow store in a temp dir,
and its FAISS index is built and attached, exactly as the pipeline stages do. Versions:
1 and 2 carry an index (1 with listing photos, 2 without, as an older index); 3 has no
index (a model the service must refuse to swap in).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from marketplace.core.config import load_params
from marketplace.data.images import clean_image
from marketplace.data.labels import LabelMap
from marketplace.features.embedding import (
    EmbeddingSet,
    embed_image_files,
    embed_texts,
    image_spec,
    text_spec,
)
from marketplace.features.encoders import ImageEncoder, TextEncoder
from marketplace.features.preprocessing import ImagePreprocessing, listing_text
from marketplace.features.tfidf import TfidfConfig
from marketplace.mlops.registry import INDEX_TAG, attach_index, find_version, log_and_register
from marketplace.mlops.tracking import setup_tracking
from marketplace.search.build import index_catalogue, save_index
from marketplace.search.index import package_sha256
from marketplace.search.thumbnails import catalogue_thumbnails
from marketplace.training.inputs import build_text_features, products_table
from marketplace.training.train import train_classifier
from tests.helpers import PROJECT_ROOT

MODEL = "test-combined"
CANVAS = 96  # small canvases and inputs keep the encoders fast
WORDS = {
    "Appliances": "washing machine fridge freezer",
    "Baby & Kids Stuff": "pram cot baby stroller",
    "Clothes, Footwear & Accessories": "dress jacket leather boots",
    "Computers & Software": "laptop keyboard monitor",
    "DIY Tools & Materials": "drill saw hammer",
    "Health & Beauty": "perfume hair dryer",
    "Home & Garden": "sofa dining table chairs",
    "Music, Films, Books & Games": "guitar vinyl records",
    "Office Furniture & Equipment": "office desk swivel chair",
    "Other Goods": "misc bundle job lot",
    "Phones, Mobile Phones & Telecoms": "iphone samsung galaxy phone",
    "Sports, Leisure & Travel": "bicycle tent golf clubs",
    "Video Games & Consoles": "playstation xbox controller",
}


@dataclass(frozen=True)
class Registry:
    """Where the test registry is and what it holds."""

    uri: str
    name: str
    listings: pd.DataFrame
    photo: bytes  # a JPEG of the catalogue
    product_with_photo: str


def photo(seed: int, size: int = 120) -> bytes:
    """A JPEG: a coloured background with a shape, different per seed."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size + 20), tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    box = sorted(rng.integers(0, size, 4).tolist())
    draw.ellipse((box[0], box[1], box[2] + 10, box[3] + 10), fill=tuple(rng.integers(0, 255, 3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _catalogue(root: Path) -> tuple[pd.DataFrame, dict[str, list[str]], Path]:
    rows = []
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    for label, (category, words) in enumerate(WORDS.items()):
        for i in range(3):
            n = label * 3 + i
            image_id = f"img{n:03d}" if n % 5 else None  # every fifth listing has no photo
            if image_id:
                clean_image(photo(label * 100 + i), CANVAS).save(images_dir / f"{image_id}.jpg")
            rows.append(
                {
                    "product_id": f"p{n:03d}",
                    "title": f"{words.split()[i % len(words.split())]} for sale {n}",
                    "description": f"{words}. Good condition, collection only.",
                    "price": float(10 + n * 7),
                    "location": "Leeds, West Yorkshire",
                    "root_category": category,
                    "label": label,
                    "image_id": image_id,
                    "image_ref": image_id,
                    "image_created": None,
                }
            )
    listings = pd.DataFrame(rows)
    ids = list(listings["product_id"])
    splits = {"train": ids[0::3] + ids[1::3], "val": ids[2::3][:6], "test": ids[2::3][6:]}
    return listings, splits, images_dir


def _embeddings(listings: pd.DataFrame, images_dir: Path) -> tuple[EmbeddingSet, EmbeddingSet]:
    params = load_params(PROJECT_ROOT / "params.yaml")
    image_params = params.embed_images.model_copy(update={"image_size": 64, "bf16": False})
    spec = image_spec(image_params, CANVAS)
    paths = sorted(images_dir.glob("*.jpg"))
    vectors = embed_image_files(
        ImageEncoder(image_params.encoder),
        ImagePreprocessing(CANVAS, 64, tuple(spec["mean"]), tuple(spec["std"])),
        paths,
        channels_last=False,
        progress=False,
    )
    images = EmbeddingSet(np.array([p.stem for p in paths]), vectors, spec)
    text_params = params.embed_text.model_copy(update={"max_tokens": 32})
    encoder = TextEncoder(text_params.encoder, max_tokens=32)
    texts = [
        listing_text(t, d) for t, d in zip(listings["title"], listings["description"], strict=True)
    ]
    text_set = EmbeddingSet(
        listings["product_id"].to_numpy(str),
        embed_texts(encoder, texts, progress=False),
        text_spec(text_params, encoder.embedding_dim),
    )
    return images, text_set


def _register(root: Path, listings, splits, images, texts, *, seed: int, index: bool) -> str:
    params = load_params(PROJECT_ROOT / "params.yaml")
    combined = params.train.combined.model_copy(update={"hidden_dim": 32, "epochs": 30})
    train = params.train.model_copy(update={"seed": seed, "combined": combined})
    label_map = LabelMap(tuple(WORDS))
    features = build_text_features(
        products_table(listings), TfidfConfig(word_buckets=512, char_buckets=512), splits
    )
    trained = train_classifier(
        "combined",
        listings,
        splits,
        label_map,
        train,
        images=images,
        texts=texts,
        text_features=features,
    )
    model_dir = root / f"model-{seed}"
    trained.package.save(model_dir)
    example = pd.DataFrame([{"text": "a sofa", "price": 20.0}])
    with mlflow.start_run(run_name=f"combined-{seed}"):
        version = log_and_register(trained, model_dir, MODEL, example, {"stage": "test"})
    if index:
        sha = package_sha256(model_dir)
        built, _ = index_catalogue(
            trained.package,
            products_table(listings),
            texts,
            images,
            params.index,
            model_name=MODEL,
            model_version=version,
            package_sha=sha,
            tune_ids=splits["val"],
        )
        save_index(built, root / f"index-{seed}")
        if seed == 0:  # version 1 carries listing photos; version 2 is an index without them
            thumbnails = catalogue_thumbnails(
                products_table(listings)["image_ids"], root / "images", params.index
            )
            assert thumbnails is not None
            thumbnails.save(root / f"index-{seed}")
        attach_index(
            MODEL, find_version(MODEL, sha), root / f"index-{seed}", {INDEX_TAG: str(len(built))}
        )
    return version


@pytest.fixture(scope="package")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    saved_uri = mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        setup_tracking(root)
        listings, splits, images_dir = _catalogue(root)
        images, texts = _embeddings(listings, images_dir)
        for seed, index in ((0, True), (1, True), (2, False)):
            _register(root, listings, splits, images, texts, seed=seed, index=index)
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
