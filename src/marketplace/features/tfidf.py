"""Hashed TF-IDF of listing text: the sparse, exact-word half of the text model.

A frozen sentence encoder captures meaning; listings also carry exact tokens that name the
category (model numbers, brand names, "PS4", the "Posted by ... in <sub-category>" line).
Word 1-2-grams and character 3-5-grams catch those. Hashing instead of a vocabulary means
the only learned state is one IDF weight per bucket: a float array saved with the model,
no pickled vectorizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse


@dataclass(frozen=True)
class TfidfConfig:
    """How text becomes hashed n-gram counts (the config saved next to the IDF weights)."""

    word_buckets: int = 2**18
    char_buckets: int = 2**18
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)

    @property
    def n_features(self) -> int:
        return self.word_buckets + self.char_buckets

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as model packages and the ``tfidf`` stage's file store it."""
        return {
            "word_buckets": self.word_buckets,
            "char_buckets": self.char_buckets,
            "word_ngrams": list(self.word_ngrams),
            "char_ngrams": list(self.char_ngrams),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TfidfConfig:
        return cls(
            int(data["word_buckets"]),
            int(data["char_buckets"]),
            (int(data["word_ngrams"][0]), int(data["word_ngrams"][1])),
            (int(data["char_ngrams"][0]), int(data["char_ngrams"][1])),
        )


class HashedTfidf:
    """Fit IDF on training texts; transform any text to an L2-normalised sublinear TF-IDF row."""

    def __init__(self, config: TfidfConfig, idf: np.ndarray | None = None) -> None:
        self.config = config
        if idf is not None and idf.shape != (config.n_features,):
            raise ValueError(f"idf has shape {idf.shape}, expected ({config.n_features},)")
        self.idf = idf
        self._vectorizers: tuple[Any, Any] | None = None

    def _counts(self, texts: list[str]) -> sparse.csr_matrix:
        word, char = self._hashers()
        return sparse.hstack([word.transform(texts), char.transform(texts)]).tocsr()

    def _hashers(self) -> tuple[Any, Any]:
        """The word and character hashers, built on first use: importing scikit-learn takes
        ~0.7 s, which loading a model for anything but hashing text (the index stage)
        need not pay."""
        if self._vectorizers is None:
            from sklearn.feature_extraction.text import HashingVectorizer

            common = {"alternate_sign": False, "norm": None}
            self._vectorizers = (
                HashingVectorizer(
                    analyzer="word",
                    ngram_range=self.config.word_ngrams,
                    n_features=self.config.word_buckets,
                    **common,
                ),
                HashingVectorizer(
                    analyzer="char_wb",
                    ngram_range=self.config.char_ngrams,
                    n_features=self.config.char_buckets,
                    **common,
                ),
            )
        return self._vectorizers

    def fit(self, texts: list[str]) -> HashedTfidf:
        """Smoothed IDF, as sklearn's ``TfidfTransformer(smooth_idf=True)``."""
        self._fit_counts(self._counts(texts))
        return self

    def fit_transform(self, texts: list[str]) -> sparse.csr_matrix:
        """``fit(texts)`` then ``transform(texts)``, hashing the texts once."""
        counts = self._counts(texts)
        self._fit_counts(counts)
        return self._weigh(counts)

    def _fit_counts(self, counts: sparse.csr_matrix) -> None:
        document_frequency = np.bincount(counts.indices, minlength=self.config.n_features)
        n = counts.shape[0]
        self.idf = (np.log((1 + n) / (1 + document_frequency)) + 1).astype(np.float32)

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        """``[len(texts), n_features]`` float32 CSR rows with unit L2 norm."""
        if self.idf is None:
            raise RuntimeError("HashedTfidf.transform before fit")
        return self._weigh(self._counts(texts))

    def _weigh(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        counts = counts.astype(np.float32)
        counts.data = 1.0 + np.log(counts.data)  # sublinear term frequency
        weighted = counts.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1))).ravel()
        return sparse.diags(1.0 / np.maximum(norms, 1e-12)).dot(weighted).astype(np.float32).tocsr()
