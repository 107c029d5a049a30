"""A tiny synthetic catalogue and its model, built with the library's own calls.

The serving tests' registry (tests/serving/conftest.py), the team stack's registry
(tests/stack/conftest.py) and the drift monitor's world (tests.helpers.monitor) all embed a
synthetic catalogue with the real packaged encoders and train a combined model on it with
the library's training code, exactly as the pipeline stages do: these are those steps,
once. 13 categories (``WORDS``), small canvases and inputs so the encoders stay fast.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from marketplace.core.config import Params, load_params
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
from marketplace.search.build import index_catalogue, save_index
from marketplace.search.index import package_sha256
from marketplace.search.thumbnails import catalogue_thumbnails
from marketplace.training.inputs import build_text_features, products_table
from marketplace.training.train import TrainedModel, train_classifier
from serving.settings import Settings
from tests.helpers import PROJECT_ROOT

MODEL = "test-combined"
ADMIN_TOKEN = "test-token"
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


def listing(
    product_id: str,
    title: str,
    description: str,
    price: float | None,
    label: int,
    image_id: str | None,
) -> dict[str, object]:
    """A cleaned listing row (what the clean stages give) in category ``label`` of WORDS."""
    return {
        "product_id": product_id,
        "title": title,
        "description": description,
        "price": price,
        "location": "Leeds, West Yorkshire",
        "root_category": list(WORDS)[label],
        "label": label,
        "image_id": image_id,
        "image_ref": image_id,
        "image_created": None,
    }


def catalogue(root: Path) -> tuple[pd.DataFrame, dict[str, list[str]], Path]:
    """39 listings (13 categories x 3; every fifth without a photo), splits, photo folder."""
    rows = []
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    for label, words in enumerate(WORDS.values()):
        for i in range(3):
            n = label * 3 + i
            image_id = f"img{n:03d}" if n % 5 else None  # every fifth listing has no photo
            if image_id:
                clean_image(photo(label * 100 + i), CANVAS).save(images_dir / f"{image_id}.jpg")
            title = f"{words.split()[i % len(words.split())]} for sale {n}"
            description = f"{words}. Good condition, collection only."
            rows.append(
                listing(f"p{n:03d}", title, description, float(10 + n * 7), label, image_id)
            )
    listings = pd.DataFrame(rows)
    ids = list(listings["product_id"])
    splits = {"train": ids[0::3] + ids[1::3], "val": ids[2::3][:6], "test": ids[2::3][6:]}
    return listings, splits, images_dir


def embeddings(
    listings: pd.DataFrame, images_dir: Path, *, image_size: int = 64, canvas: int = CANVAS
) -> tuple[EmbeddingSet, EmbeddingSet]:
    """The photos' and texts' vectors from the packaged encoders (as the embed stages)."""
    params = load_params(PROJECT_ROOT / "params.yaml")
    image_params = params.embed_images.model_copy(update={"image_size": image_size, "bf16": False})
    spec = image_spec(image_params, canvas)
    paths = sorted(images_dir.glob("*.jpg"))
    vectors = embed_image_files(
        ImageEncoder(image_params.encoder),
        ImagePreprocessing(canvas, image_size, tuple(spec["mean"]), tuple(spec["std"])),
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


def train_combined(
    params: Params,
    listings: pd.DataFrame,
    splits: dict[str, list[str]],
    images: EmbeddingSet,
    texts: EmbeddingSet,
    *,
    seed: int,
    hidden_dim: int = 32,
    epochs: int = 30,
    buckets: int = 512,
) -> TrainedModel:
    """A small combined model trained with the train stage's library calls."""
    combined = params.train.combined.model_copy(update={"hidden_dim": hidden_dim, "epochs": epochs})
    train = params.train.model_copy(update={"seed": seed, "combined": combined})
    features = build_text_features(
        products_table(listings), TfidfConfig(word_buckets=buckets, char_buckets=buckets), splits
    )
    return train_classifier(
        "combined",
        listings,
        splits,
        LabelMap(tuple(WORDS)),
        train,
        images=images,
        texts=texts,
        text_features=features,
    )


def register(root: Path, listings, splits, images, texts, *, seed: int, index: bool) -> str:
    """Train, log and register a version of ``MODEL`` (with its index if ``index``)."""
    params = load_params(PROJECT_ROOT / "params.yaml")
    trained = train_combined(params, listings, splits, images, texts, seed=seed)
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


def serving_settings(registry: Registry, **overrides: object) -> Settings:
    """The service's settings over ``registry``, with small limits the tests provoke."""
    values = {
        "tracking_uri": registry.uri,
        "model_name": registry.name,
        "admin_token": ADMIN_TOKEN,
        "max_upload_bytes": 2 * 1024 * 1024,
        "max_image_pixels": 4_000_000,
        "max_text_chars": 500,
        "max_k": 20,
        **overrides,
    }
    return Settings(**values)
