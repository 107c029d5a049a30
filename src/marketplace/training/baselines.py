"""The original system's baselines, kept for parity: how much do the real models add?

- price: linear regression on log price from category dummies and title TF-IDF
  (the seed's "generic linear regression with product categories as dummy variables");
- category from pixels: an SVC on downscaled image pixels (the seed reported 15-20 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.preprocessing import OneHotEncoder
from sklearn.svm import SVC

from marketplace.core.config import BaselinesParams


@dataclass(frozen=True)
class BaselineResult:
    """Metrics (test split) and the settings that produced them."""

    metrics: dict[str, float]
    params: dict[str, object]


def price_regression(
    products: pd.DataFrame, splits: dict[str, list[str]], params: BaselinesParams
) -> BaselineResult:
    """Log-price linear regression; RMSE/MAE in log space and in pounds, and R²."""
    priced = products.dropna(subset=["price"]).drop_duplicates("product_id")
    priced = priced.set_index("product_id")
    train = priced.loc[priced.index.intersection(splits["train"])]
    test = priced.loc[priced.index.intersection(splits["test"])]
    dummies = OneHotEncoder(handle_unknown="ignore").fit(train[["root_category"]])
    tfidf = TfidfVectorizer(
        max_features=params.price_text_features, ngram_range=(1, 2), sublinear_tf=True
    ).fit(train["title"])

    def features(frame: pd.DataFrame) -> sparse.csr_matrix:
        return sparse.hstack(
            [dummies.transform(frame[["root_category"]]), tfidf.transform(frame["title"])]
        ).tocsr()

    model = Ridge(alpha=params.price_ridge_alpha).fit(features(train), np.log1p(train["price"]))
    predicted_log = model.predict(features(test))
    actual_log = np.log1p(test["price"].to_numpy())
    predicted = np.expm1(predicted_log)
    return BaselineResult(
        metrics={
            "price_rmse_log": float(np.sqrt(mean_squared_error(actual_log, predicted_log))),
            "price_mae_log": float(mean_absolute_error(actual_log, predicted_log)),
            "price_r2_log": float(r2_score(actual_log, predicted_log)),
            "price_rmse_gbp": float(np.sqrt(mean_squared_error(test["price"], predicted))),
            "price_mae_gbp": float(mean_absolute_error(test["price"], predicted)),
            "price_n_test": float(len(test)),
        },
        params={
            "features": f"root category dummies + title tfidf({params.price_text_features})",
            "target": "log1p(price)",
            "alpha": params.price_ridge_alpha,
        },
    )


def _pixels(paths: list[Path], side: int) -> np.ndarray:
    rows = []
    for path in paths:
        with Image.open(path) as image:
            small = image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        rows.append(np.asarray(small, dtype=np.float32).ravel() / 255.0)
    return np.stack(rows) if rows else np.zeros((0, side * side * 3), dtype=np.float32)


def pixel_svc(
    images: pd.DataFrame, images_dir: Path, splits: dict[str, list[str]], params: BaselinesParams
) -> BaselineResult:
    """SVC (RBF) on ``svc_image_size``² RGB pixels of each cleaned image; test accuracy
    (on at most ``svc_max_test`` test images, a seeded sample)."""
    available = images[images["image_id"].map(lambda i: (images_dir / f"{i}.jpg").exists())]

    def part(name: str, cap: int | None) -> tuple[np.ndarray, np.ndarray]:
        rows = available[available["product_id"].isin(splits[name])]
        if cap is not None and len(rows) > cap:
            rows = rows.sample(n=cap, random_state=params.seed)
        paths = [images_dir / f"{i}.jpg" for i in rows["image_id"]]
        return _pixels(paths, params.svc_image_size), rows["label"].to_numpy()

    x_train, y_train = part("train", params.svc_max_train)
    x_test, y_test = part("test", params.svc_max_test)
    model = SVC(C=params.svc_c, kernel="rbf", gamma="scale").fit(x_train, y_train)
    accuracy = float((model.predict(x_test) == y_test).mean()) if len(y_test) else float("nan")
    return BaselineResult(
        metrics={
            "svc_pixels_accuracy": accuracy,
            "svc_n_train": float(len(y_train)),
            "svc_n_test": float(len(y_test)),
        },
        params={
            "pixels": f"{params.svc_image_size}x{params.svc_image_size} RGB",
            "C": params.svc_c,
            "max_train": params.svc_max_train,
            "max_test": params.svc_max_test,
        },
    )
