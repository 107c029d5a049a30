"""The combined model's price feature: part of the model, fitted by training, used by serving."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PriceScaler:
    """log1p(price) standardised with training statistics; missing prices get a flag."""

    mean: float
    std: float

    @classmethod
    def fit(cls, prices: Sequence[float | None]) -> PriceScaler:
        logs = np.log1p(np.array([p for p in prices if p is not None and not math.isnan(p)]))
        if len(logs) == 0:
            return cls(0.0, 1.0)
        return cls(float(logs.mean()), float(logs.std() or 1.0))

    @staticmethod
    def missing(n: int) -> np.ndarray:
        """``[n, 2]`` rows of listings without a price (what a photo-only query brings)."""
        return PriceScaler(0.0, 1.0).transform([None] * n)

    def transform(self, prices: Sequence[float | None]) -> np.ndarray:
        """``[N, 2]``: standardised log price (0 when missing), and a missing flag."""
        out = np.zeros((len(prices), 2), dtype=np.float32)
        for i, price in enumerate(prices):
            if price is None or math.isnan(price) or price < 0:
                out[i, 1] = 1.0
            else:
                out[i, 0] = (math.log1p(price) - self.mean) / self.std
        return out
