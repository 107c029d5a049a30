"""The MLflow pyfunc model of a marketplace classifier, as "models from code".

MLflow runs this file when it loads a logged model: nothing is unpickled. The model's
``package`` artifact is a classifier folder (``marketplace.models.classifier``); the
marketplace code ships with the model (``code_paths``).

Input: a DataFrame with any of ``image`` (base64 JPEG/PNG/WebP), ``text`` (title and/or
description) and ``price`` (GBP). Output: ``category``, ``confidence`` and
``probabilities`` (JSON object, category -> probability).
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    if name not in frame.columns:
        return [None] * len(frame)
    return [
        None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in frame[name]
    ]


class MarketplaceClassifierModel(PythonModel):
    """pyfunc wrapper around ``ListingClassifier``."""

    def load_context(self, context: PythonModelContext) -> None:
        from marketplace.artifacts import PACKAGE_ARTIFACT
        from marketplace.models.classifier import ListingClassifier

        self.classifier = ListingClassifier.load(Path(context.artifacts[PACKAGE_ARTIFACT]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        images = [base64.b64decode(v) if v else None for v in _column(model_input, "image")]
        probabilities = self.classifier.predict_proba(
            images=images,
            texts=_column(model_input, "text"),
            prices=_column(model_input, "price"),
        )
        names = self.classifier.categories
        best = probabilities.argmax(axis=1)
        return pd.DataFrame(
            {
                "category": [names[i] for i in best],
                "confidence": probabilities.max(axis=1).astype(float),
                "probabilities": [
                    json.dumps({n: round(float(p), 6) for n, p in zip(names, row, strict=True)})
                    for row in probabilities
                ],
            }
        )


mlflow.models.set_model(MarketplaceClassifierModel())
