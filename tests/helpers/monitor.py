"""A small, real world for the drift monitor's tests and benchmark.

A synthetic catalogue (13 categories, a category-coloured photo for most listings and a
text drawn from the category's words with some overlap) is embedded with the real
packaged encoders, a combined model is trained on it with the library's training code,
and its training reference is built as the train stage builds it. Then ``Replay`` turns
listings into prediction-log rows exactly as serving logs them: the model's calibrated
answer (``ListingClassifier.predict_proba``) and the frozen encoders' vectors of the
input, as float16 bytes. Nothing here stubs the monitor's inputs.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from marketplace.core.config import Params, load_params
from marketplace.data.images import clean_image
from marketplace.data.labels import LabelMap
from marketplace.features.embedding import (
    EmbeddingSet,
)
from marketplace.features.preprocessing import listing_text
from marketplace.mlops.reference import Reference, build_reference
from marketplace.models.classifier import ListingClassifier
from marketplace.models.query import query_kind
from marketplace.training.train import TrainedModel
from tests.helpers import PROJECT_ROOT
from tests.helpers.tiny import WORDS, embeddings, listing, train_combined

CANVAS = 96
IMAGE_SIZE = 64
FILLER = [
    "good",
    "condition",
    "collection",
    "only",
    "cash",
    "please",
    "pick",
    "up",
    "local",
    "bargain",
    "offers",
]


def _photo(label: int, rng: np.random.Generator) -> bytes:
    hue = label / len(WORDS)
    base = np.array(Image.new("HSV", (1, 1), (int(255 * hue), 160, 200)).convert("RGB"))[0, 0]
    background = tuple(int(c) for c in np.clip(base + rng.normal(0, 25, 3), 0, 255))
    size = int(rng.integers(100, 160))
    image = Image.new("RGB", (size, int(size * rng.uniform(0.7, 1.3))), background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        x1, y1 = (int(v) for v in rng.integers(20, size // 2, 2))
        box = (x0, y0, x0 + x1, y0 + y1)
        fill = tuple(int(c) for c in rng.integers(0, 255, 3))
        if label % 3 == 0:
            draw.ellipse(box, fill=fill)
        elif label % 3 == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.chord(box, 0, 200, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def grey_photo(seed: int) -> bytes:
    """A flat grey photo (a broken camera upload, a placeholder): the grey-photo shift."""
    level = 100 + seed % 60
    out = io.BytesIO()
    Image.new("RGB", (120, 120), (level, level, level)).save(out, "JPEG", quality=85)
    return out.getvalue()


def _text(label: int, rng: np.random.Generator) -> tuple[str, str]:
    words = list(WORDS.values())
    own = words[label].split()
    other = words[int(rng.integers(0, len(words)))].split()
    title = " ".join(rng.choice(own, 2)) + " " + str(rng.choice(FILLER))
    n = int(rng.integers(3, 30))
    pool = own * 3 + other + FILLER
    description = " ".join(rng.choice(pool, n))
    return title, description


@dataclass
class World:
    """The catalogue, its model and reference, and the photos by image id."""

    listings: pd.DataFrame
    splits: dict[str, list[str]]
    label_map: LabelMap
    images: EmbeddingSet
    texts: EmbeddingSet
    trained: TrainedModel
    reference: Reference
    photos: dict[str, bytes]
    params: Params
    classifier: ListingClassifier = field(init=False)

    def __post_init__(self) -> None:
        self.classifier = ListingClassifier(self.trained.package)

    def products(self, split: str) -> pd.DataFrame:
        table = self.listings.drop_duplicates("product_id").set_index("product_id")
        return table.loc[self.splits[split]]


def build_world(root: Path, *, per_category: int = 40, seed: int = 0) -> World:
    """Generate, embed, train (a few seconds of training; the encoders dominate)."""
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows, photos = [], {}
    for label in range(len(WORDS)):
        for i in range(per_category):
            n = label * per_category + i
            image_id = f"img{n:04d}" if rng.random() < 0.8 else None
            if image_id:
                photos[image_id] = _photo(label, rng)
                clean_image(photos[image_id], CANVAS).save(images_dir / f"{image_id}.jpg")
            title, description = _text(label, rng)
            price = float(rng.integers(5, 500)) if rng.random() < 0.9 else None
            rows.append(listing(f"p{n:04d}", title, description, price, label, image_id))
    listings = pd.DataFrame(rows)
    order = rng.permutation(len(listings))
    ids = listings["product_id"].to_numpy()[order].tolist()
    # A large val split (40 %): a replay of 500 requests then repeats few listings, as
    # the real export's ~1,000 val products would not.
    n_val, n_test = len(ids) * 2 // 5, len(ids) // 10
    splits = {
        "val": ids[:n_val],
        "test": ids[n_val : n_val + n_test],
        "train": ids[n_val + n_test :],
    }

    params = load_params(PROJECT_ROOT / "params.yaml")
    images, texts = embeddings(listings, images_dir, image_size=IMAGE_SIZE, canvas=CANVAS)
    label_map = LabelMap(tuple(WORDS))
    trained = train_combined(
        params, listings, splits, images, texts, seed=seed, hidden_dim=64, epochs=40, buckets=1024
    )
    reference = build_reference(
        "combined",
        listings,
        splits["train"],
        list(label_map.categories),
        images=images,
        texts=texts,
        val_by_kind=trained.val_by_kind,
        size=params.monitor.reference_size,
        seed=seed,
    )
    return World(listings, splits, label_map, images, texts, trained, reference, photos, params)


@dataclass(frozen=True)
class Request:
    """One /predict request: a photo and/or a text, and a price."""

    image: bytes | None
    text: str | None
    price: float | None = None


def listing_requests(world: World, product_ids: list[str], *, as_they_come: bool = True):
    """The products as requests: photo + text where there is a photo, else text alone."""
    table = world.listings.drop_duplicates("product_id").set_index("product_id")
    out = []
    for pid in product_ids:
        row = table.loc[pid]
        photo = world.photos.get(row["image_id"]) if isinstance(row["image_id"], str) else None
        price = None if pd.isna(row["price"]) else float(row["price"])
        out.append(Request(photo, listing_text(row["title"], row["description"]), price))
    return out


def log_rows(
    world: World,
    requests: list[Request],
    *,
    model_name: str,
    model_version: str,
    start: float,
    step: float = 1.0,
    role: str = "served",
    request_ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Prediction-log rows for ``requests``, as serving writes them (see the module doc)."""
    classifier = world.classifier
    distinct: dict[tuple[bytes | None, str | None, float | None], int] = {}
    slots = [distinct.setdefault((r.image, r.text, r.price), len(distinct)) for r in requests]
    keys = list(distinct)
    probabilities = classifier.predict_proba(
        images=[k[0] for k in keys], texts=[k[1] for k in keys], prices=[k[2] for k in keys]
    )
    with_photo = [i for i, k in enumerate(keys) if k[0] is not None]
    image_vectors: dict[int, bytes] = {}
    if with_photo:
        vectors, _ = classifier.image_embeddings([keys[i][0] for i in with_photo])
        image_vectors = {
            i: v.numpy().astype(np.float16).tobytes()
            for i, v in zip(with_photo, vectors, strict=True)
        }
    with_text = [i for i, k in enumerate(keys) if k[1]]
    text_vectors: dict[int, bytes] = {}
    if with_text:
        vectors = classifier.text_embeddings([keys[i][1] for i in with_text])
        text_vectors = {
            i: v.numpy().astype(np.float16).tobytes()
            for i, v in zip(with_text, vectors, strict=True)
        }
    categories = world.label_map.categories
    rows = []
    for n, (request, slot) in enumerate(zip(requests, slots, strict=True)):
        p = probabilities[slot]
        top = np.argsort(-p)[:3]
        rows.append(
            {
                "request_id": request_ids[n] if request_ids else uuid.uuid4().hex,
                "ts": start + n * step,
                "endpoint": "predict",
                "model_name": model_name,
                "model_version": model_version,
                "role": role,
                "client": None,
                "query_kind": query_kind(bool(request.text), request.image is not None),
                "category": categories[int(top[0])],
                "probability": float(p[top[0]]),
                "top_k": json.dumps([[categories[int(i)], round(float(p[i]), 6)] for i in top]),
                "latency_ms": 10.0,
                "text_chars": len(request.text) if request.text else None,
                "image_bytes": len(request.image) if request.image else None,
                "image_sha256": (
                    hashlib.sha256(request.image).hexdigest() if request.image else None
                ),
                "price_present": request.price is not None,
                "image_vector": image_vectors.get(slot),
                "text_vector": text_vectors.get(slot),
            }
        )
    return rows


def val_replay(world: World, n: int, seed: int) -> list[Request]:
    """``n`` requests drawn (with replacement) from the val products, as they come."""
    rng = np.random.default_rng(seed)
    ids = [str(i) for i in rng.choice(world.splits["val"], n, replace=True)]
    return listing_requests(world, ids)


def one_category(world: World, n: int, seed: int, category: int = 0) -> list[Request]:
    """``n`` requests of one category's listings only (val and test), as they come."""
    rng = np.random.default_rng(seed)
    table = world.listings.drop_duplicates("product_id").set_index("product_id")
    pool = [
        p for p in world.splits["val"] + world.splits["test"] if table.loc[p, "label"] == category
    ]
    return listing_requests(world, [str(i) for i in rng.choice(pool, n, replace=True)])


def grey_photos(world: World, n: int, seed: int) -> list[Request]:
    """A val replay whose photos are all flat grey (texts and prices unchanged)."""
    return [
        Request(grey_photo(seed + i) if r.image is not None else None, r.text, r.price)
        for i, r in enumerate(val_replay(world, n, seed))
    ]
