"""The MLflow pyfunc model of a marketplace classifier, as "models from code".

MLflow runs this file when it loads a logged model: nothing is unpickled. The model's
``package`` artifact is a classifier folder (``marketplace.models.classifier``); the
marketplace code ships with the model (``code_paths``). ``PACKAGE_ARTIFACT`` and
``INDEX_ARTIFACT`` name the model's artifacts: the registry writes them and the API reads
them (``marketplace.inference``), neither needing the other's code.

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

PACKAGE_ARTIFACT = "package"  # the classifier folder, inside the logged model's artifacts
INDEX_ARTIFACT = "index"  # the FAISS index folder, beside it (combined model only)


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    if name not in frame.columns:
        return [None] * len(frame)
    return [
        None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in frame[name]
    ]


class MarketplaceClassifierModel(PythonModel):
    """pyfunc wrapper around ``ListingClassifier``."""

    def load_context(self, context: PythonModelContext) -> None:
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


# MLflow executes this file under a module name of its own when it logs or loads a model:
# only then is the model set. Imported as ``marketplace.mlops.pyfunc`` (for the names
# above) it has no side effect.
if __name__ != "marketplace.mlops.pyfunc":
    mlflow.models.set_model(MarketplaceClassifierModel())
