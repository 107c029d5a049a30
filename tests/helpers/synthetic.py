"""Small synthetic inputs the unit tests share: params.yaml with one key changed, tiny
photo canvases and their image spec, and a toy product index of three categories."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from marketplace.features.encoders import LITE_MEAN, LITE_STD
from marketplace.search.build import build_faiss, catalogue_vectors
from marketplace.search.index import INDEX_FORMAT, IndexMeta, ProductIndex
from tests.helpers import PROJECT_ROOT

BASE: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
DELETE = object()  # params_with(path, DELETE): the key is removed
SIZE = 32  # encoder input side: tiny, so a step is milliseconds
COLOURS = [(200, 40, 40), (40, 40, 200)]
HALF = 8  # the toy index's text (and photo) dimension


def params_with(path: str, value: Any) -> dict[str, Any]:
    """params.yaml as a dict with ``path`` (dotted) set to ``value`` (or removed)."""
    data = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return data


def image_spec(bf16: bool = False) -> dict:
    """The embed stage's spec for ``SIZE`` canvases (EfficientNet-Lite0)."""
    return {
        "kind": "image",
        "encoder": "efficientnet_lite0",
        "dim": 1280,
        "canvas_size": SIZE,
        "image_size": SIZE,
        "mean": list(LITE_MEAN),
        "std": list(LITE_STD),
        "bf16": bf16,
    }


def colour_photos(folder: Path, n: int) -> tuple[list[str], torch.Tensor]:
    """``n`` canvases: class = colour, with some noise so that crops differ."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids, labels = [], []
    for i in range(n):
        label = i % 2
        pixels = np.clip(
            np.array(COLOURS[label]) + rng.normal(0, 25, (SIZE, SIZE, 3)), 0, 255
        ).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.jpg", quality=95)
        ids.append(f"img{i}")
        labels.append(label)
    return ids, torch.tensor(labels)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, HALF)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def toy_index(
    factory: str = "Flat", n: int = 60, text_noise: float = 0.3, image_noise: float = 0.3
) -> ProductIndex:
    """Three well-separated categories; every fourth product has no photo."""
    rng = np.random.default_rng(0)
    centres_t, centres_i = _unit(rng, 3) * 4, _unit(rng, 3) * 4
    labels = np.arange(n) % 3
    text = centres_t[labels] + rng.normal(size=(n, HALF)).astype(np.float32) * text_noise
    image = centres_i[labels] + rng.normal(size=(n, HALF)).astype(np.float32) * image_noise
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    has_image = (np.arange(n) % 4 != 0).astype(np.float32)
    vectors = catalogue_vectors(text, image, has_image)
    products = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(n)],
            "title": [f"item {i}" for i in range(n)],
            "price": [float(i) if i % 7 else np.nan for i in range(n)],
            "category": [f"c{label}" for label in labels],
            "location": ["Leeds"] * n,
            "image_id": pd.array([f"i{i}" if has_image[i] else None for i in range(n)], "string"),
        }
    )
    meta = IndexMeta(
        INDEX_FORMAT, "m", "3", "abc", {}, {}, factory, 8, 32, 2 * HALF, n, int(has_image.sum()),
        "test",
    )  # fmt: skip
    return ProductIndex(build_faiss(vectors, factory), products, meta)
