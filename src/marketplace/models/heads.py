"""Classification heads over cached embeddings (architectures only; training is elsewhere).

Every head exposes ``embed`` (the representation before its last layer) next to
``forward`` (logits), so what the classifier learned can also serve similarity search.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class MLPHead(nn.Module):
    """``in_dim -> hidden_dim -> num_classes`` with dropout; ``hidden_dim=0`` is linear."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        *,
        hidden_dim: int = 512,
        dropout: float = 0.3,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout)
        if hidden_dim > 0:
            self.body: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout)
            )
            out_dim = hidden_dim
        else:
            self.body = nn.Identity()
            out_dim = in_dim
        self.classifier = nn.Linear(out_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.input_dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class FusionClassifier(nn.Module):
    """Image + text (+ listing fields) -> category.

    Each modality is projected to ``hidden_dim``; the projections, a flag saying whether a
    photo exists and the extra listing features (price, ...) are concatenated and classified
    by an MLP. During training the image branch is dropped for a share of rows
    (``modality_dropout``) so that the model stays good on listings without a photo and does
    not lean on one modality alone.
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        extra_dim: int,
        num_classes: int,
        *,
        hidden_dim: int = 512,
        dropout: float = 0.3,
        modality_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.image_proj = nn.Sequential(
            nn.Dropout(dropout / 2), nn.Linear(image_dim, hidden_dim), nn.GELU()
        )
        self.text_proj = nn.Sequential(
            nn.Dropout(dropout / 2), nn.Linear(text_dim, hidden_dim), nn.GELU()
        )
        self.fuse = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_dim + 1 + extra_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(hidden_dim, num_classes)
        self.modality_dropout = modality_dropout

    def embed(
        self, image: torch.Tensor, has_image: torch.Tensor, text: torch.Tensor, extra: torch.Tensor
    ) -> torch.Tensor:
        present = has_image.float().unsqueeze(1)
        if self.training and self.modality_dropout > 0:
            keep = (torch.rand_like(present) >= self.modality_dropout).float()
            present = present * keep
        image_part = self.image_proj(image) * present
        return self.fuse(torch.cat([image_part, self.text_proj(text), present, extra], dim=1))

    def forward(
        self, image: torch.Tensor, has_image: torch.Tensor, text: torch.Tensor, extra: torch.Tensor
    ) -> torch.Tensor:
        return self.classifier(self.embed(image, has_image, text, extra))


class SparseLinear(nn.Module):
    """A linear layer over sparse rows (hashed TF-IDF): ``[B, n_features] -> [B, out]``.

    Takes scipy CSR rows (or a torch sparse tensor); only the non-zero entries of a batch
    contribute, so half a million input features cost no more than the words present.
    """

    def __init__(self, n_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, rows: object) -> torch.Tensor:
        return torch.sparse.mm(to_torch_sparse(rows), self.weight) + self.bias


def to_torch_sparse(rows: object) -> torch.Tensor:
    """scipy sparse rows -> torch COO tensor (torch sparse tensors pass through)."""
    if isinstance(rows, torch.Tensor):
        return rows
    coo = rows.tocoo()  # type: ignore[attr-defined]
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=False)


class TextClassifier(nn.Module):
    """Wide & deep over a listing's text: exact n-grams (sparse TF-IDF) + sentence meaning.

    The logits are the sum of a linear model on hashed TF-IDF and an MLP on the frozen
    sentence embedding; ``embed`` is the MLP's hidden layer.
    """

    def __init__(
        self,
        tfidf_features: int,
        text_dim: int,
        num_classes: int,
        *,
        hidden_dim: int = 512,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.wide = SparseLinear(tfidf_features, num_classes)
        self.deep = MLPHead(text_dim, num_classes, hidden_dim=hidden_dim, dropout=dropout)

    def embed(self, tfidf: object, text: torch.Tensor) -> torch.Tensor:
        return self.deep.embed(text)

    def forward(self, tfidf: object, text: torch.Tensor) -> torch.Tensor:
        return self.wide(tfidf) + self.deep(text)


class CombinedClassifier(nn.Module):
    """Image + text + listing fields: the fusion MLP plus the wide TF-IDF term."""

    def __init__(
        self,
        tfidf_features: int,
        image_dim: int,
        text_dim: int,
        extra_dim: int,
        num_classes: int,
        *,
        hidden_dim: int = 512,
        dropout: float = 0.3,
        modality_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.wide = SparseLinear(tfidf_features, num_classes)
        self.fusion = FusionClassifier(
            image_dim,
            text_dim,
            extra_dim,
            num_classes,
            hidden_dim=hidden_dim,
            dropout=dropout,
            modality_dropout=modality_dropout,
        )

    def embed(
        self,
        tfidf: object,
        image: torch.Tensor,
        has_image: torch.Tensor,
        text: torch.Tensor,
        extra: torch.Tensor,
    ) -> torch.Tensor:
        return self.fusion.embed(image, has_image, text, extra)

    def forward(
        self,
        tfidf: object,
        image: torch.Tensor,
        has_image: torch.Tensor,
        text: torch.Tensor,
        extra: torch.Tensor,
    ) -> torch.Tensor:
        return self.wide(tfidf) + self.fusion(image, has_image, text, extra)
