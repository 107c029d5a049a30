"""Classification heads over cached embeddings (architectures only; training is elsewhere).

Every head exposes ``embed`` (the representation before its last layer) next to
``forward`` (logits), so what the classifier learned can also serve similarity search.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marketplace.models.price import PriceScaler


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


class SparseLinear(nn.Module):
    """A linear layer over sparse rows (hashed TF-IDF): ``[B, n_features] -> [B, out]``.

    Takes scipy CSR rows, whose layout is exactly an ``EmbeddingBag`` call (column indices,
    row offsets, values as per-sample weights): only the non-zero entries of a batch are
    read, so half a million input features cost no more than the words present. Its
    gradient is sparse too: in training, the weight's gradient holds exactly the rows of
    the batch's n-grams, each once (``_TouchedRows``), and the training loop updates those
    rows only (``training.optim.LazyAdam``).
    """

    def __init__(self, n_features: int, out_features: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(n_features, out_features, mode="sum", sparse=True)
        nn.init.zeros_(self.bag.weight)
        self.bias = nn.Parameter(torch.zeros(out_features))

    @property
    def weight(self) -> nn.Parameter:
        return self.bag.weight

    def forward(self, rows: object) -> torch.Tensor:
        csr = rows.tocsr()  # type: ignore[attr-defined]
        offsets = torch.from_numpy(csr.indptr[:-1].astype(np.int64))
        weights = torch.from_numpy(csr.data.astype(np.float32))
        if torch.is_grad_enabled() and self.weight.requires_grad:
            touched, local = _distinct(csr.indices, self.weight.shape[0])
            out = _TouchedRows.apply(self.weight, touched, local, offsets, weights)
        else:
            out = self.bag(torch.from_numpy(csr.indices.astype(np.int64)), offsets, weights)
        return out + self.bias


def _distinct(indices: np.ndarray, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows a batch touches (ascending) and each entry's position among them.

    A mark array instead of a sort: linear in the entries and the table's length.
    """
    mark = np.zeros(n_rows, dtype=bool)
    mark[indices] = True
    touched = np.flatnonzero(mark)
    position = np.empty(n_rows, dtype=np.int64)
    position[touched] = np.arange(len(touched))
    return torch.from_numpy(touched), torch.from_numpy(position[indices])


class _TouchedRows(torch.autograd.Function):
    """``EmbeddingBag`` (sum) whose weight gradient is a coalesced sparse tensor of the
    touched rows: the optimiser then needs no sort (``coalesce``) and no sparse arithmetic,
    which took most of a training step with ``nn.EmbeddingBag(sparse=True)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        weight: torch.Tensor,
        touched: torch.Tensor,
        local: torch.Tensor,
        offsets: torch.Tensor,
        per_sample: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(touched, local, offsets, per_sample)
        ctx.table_shape = weight.shape
        return F.embedding_bag(
            local, weight[touched], offsets, mode="sum", per_sample_weights=per_sample
        )

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from scipy import sparse

        touched, local, offsets, per_sample = ctx.saved_tensors
        # d weight[touched] = X_local^T @ d out, X_local the batch's rows over its touched
        # columns: one sparse-dense product (torch's 2-D index_add_ took 2 ms a step).
        indptr = np.append(offsets.numpy(), len(local))
        x_local = sparse.csr_matrix(
            (per_sample.numpy(), local.numpy(), indptr), shape=(len(offsets), len(touched))
        )
        values = torch.from_numpy(np.ascontiguousarray(x_local.T @ grad_out.numpy()))
        grad = torch.sparse_coo_tensor(
            touched[None], values, ctx.table_shape, is_coalesced=True, check_invariants=False
        )
        return grad, None, None, None, None


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
    """Image + text + listing fields, as a sum of per-modality logits.

    ``price_head(extra) + has_text * (wide(tfidf) + text_head(text)) + has_image * image
    vote``: each modality votes, and a listing is scored by the votes of what it brings (a
    photo, a text, or both). Summing logits (rather than one MLP over the concatenation)
    keeps a weak modality from drowning a strong one.

    Every query kind must stand alone (issue 11: trained on the sum only, the image branch
    learned just a small correction on top of strong text votes and scored photos alone at
    chance). With ``aux_weight`` > 0, ``training_loss`` adds to the loss of the full sum
    one term per branch, the text-only logits on every row and the photo-only logits on
    the rows with a photo, and the image branch has two output layers on one hidden layer:
    ``image_head.classifier``, the vote *beside* a text (a correction, as before), and
    ``image_alone``, the vote when the photo is all there is. One layer cannot be both: a
    vote strong enough to classify a photo alone outvotes the text when both come (on the
    real export, photo+text fell from 83 % to 80 % with one shared layer; BENCHMARKS.md).
    The image vote is still dropped for ``modality_dropout`` of the full-sum rows.
    ``embed`` concatenates the text and image hidden layers.
    """

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
        aux_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.wide = SparseLinear(tfidf_features, num_classes)
        self.text_head = MLPHead(text_dim, num_classes, hidden_dim=hidden_dim, dropout=dropout)
        self.image_head = MLPHead(
            image_dim, num_classes, hidden_dim=hidden_dim, dropout=max(dropout, 0.5)
        )
        self.image_alone = (
            nn.Linear(self.image_head.classifier.in_features, num_classes)
            if aux_weight > 0
            else None
        )
        self.price_head = nn.Linear(extra_dim, num_classes)
        self.modality_dropout = modality_dropout
        self.aux_weight = aux_weight

    def embed(
        self,
        tfidf: object,
        image: torch.Tensor,
        has_image: torch.Tensor,
        text: torch.Tensor,
        extra: torch.Tensor,
        has_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        text_flag = torch.ones(len(text)) if has_text is None else has_text.float()
        return torch.cat(
            [
                self.text_head.embed(text) * text_flag.unsqueeze(1),
                self.image_head.embed(image) * has_image.float().unsqueeze(1),
            ],
            dim=1,
        )

    def votes(
        self, tfidf: object, image: torch.Tensor, text: torch.Tensor, extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The votes before masking: text (wide + deep), image beside a text, image alone
        (the same as beside a text for a model trained without ``aux_weight``), price."""
        hidden = self.image_head.embed(image)
        beside_text = self.image_head.classifier(hidden)
        alone = beside_text if self.image_alone is None else self.image_alone(hidden)
        return (
            self.wide(tfidf) + self.text_head(text),
            beside_text,
            alone,
            self.price_head(extra),
        )

    def forward(
        self,
        tfidf: object,
        image: torch.Tensor,
        has_image: torch.Tensor,
        text: torch.Tensor,
        extra: torch.Tensor,
        has_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits; ``has_text`` (default: all rows have text) and ``has_image`` say which
        votes count."""
        text_vote, beside_text, alone, price_vote = self.votes(tfidf, image, text, extra)
        text_flag = (torch.ones(len(text)) if has_text is None else has_text.float()).unsqueeze(1)
        image_vote = text_flag * beside_text + (1 - text_flag) * alone
        return price_vote + text_flag * text_vote + self._image_weight(has_image) * image_vote

    def _image_weight(self, has_image: torch.Tensor) -> torch.Tensor:
        """``[B, 1]``: 1 where the image votes; in training, dropped for
        ``modality_dropout`` of the rows so the text votes stay good on their own."""
        weight = has_image.float().unsqueeze(1)
        if self.training and self.modality_dropout > 0:
            weight = weight * (torch.rand_like(weight) >= self.modality_dropout).float()
        return weight

    def training_loss(
        self, batch: list[Any], labels: torch.Tensor, label_smoothing: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of the full sum plus the per-branch terms (see the class docstring); the
        full sum's logits, for the training accuracy."""
        tfidf, image, has_image, text, extra = batch[:5]
        if self.aux_weight == 0:
            logits = self(tfidf, image, has_image, text, extra)
            return F.cross_entropy(logits, labels, label_smoothing=label_smoothing), logits
        text_vote, beside_text, alone, price_vote = self.votes(tfidf, image, text, extra)
        logits = price_vote + text_vote + self._image_weight(has_image) * beside_text
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        text_only = price_vote + text_vote
        loss = loss + self.aux_weight * F.cross_entropy(
            text_only, labels, label_smoothing=label_smoothing
        )
        photo = has_image > 0
        if photo.any():
            # A photo-only query has no price.
            missing = torch.from_numpy(PriceScaler.missing(1))
            photo_only = alone[photo] + self.price_head(missing)
            # Summed over the photo rows, divided by the batch: each row weighs the same.
            loss = loss + self.aux_weight * F.cross_entropy(
                photo_only, labels[photo], label_smoothing=label_smoothing, reduction="sum"
            ) / len(labels)
        return loss, logits
