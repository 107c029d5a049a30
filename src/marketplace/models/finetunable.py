"""Encoder + head modules that fine-tuning trains end to end (architectures only).

Heads normally train on cached embeddings. Fine-tuning instead runs the encoder in the
loop, with only its last stages trainable (``ImageEncoder.freeze`` /
``TextEncoder.freeze``): autograd then records nothing below the first trainable stage, so
a step costs one frozen forward pass plus the backward pass of the top. The encoder stays
in eval mode throughout (pretrained BatchNorm statistics, no dropout or drop-connect), so
the fine-tuned model computes exactly what ``ListingClassifier`` computes at serving time.
The training loop is ``marketplace.training.finetune``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from marketplace.features.embedding import use_bf16
from marketplace.features.encoders import ImageEncoder, TextEncoder


def _autocast(bf16: bool) -> Any:
    return torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16(bf16) else nullcontext()


class _FrozenModeMixin(nn.Module):
    encoder: nn.Module

    def train(self, mode: bool = True) -> _FrozenModeMixin:
        super().train(mode)
        self.encoder.eval()  # pretrained normalisation statistics; no dropout in the encoder
        return self


class PixelClassifier(_FrozenModeMixin):
    """uint8 photos ``[B, 3, H, W]`` -> logits: normalise, image encoder, head.

    ``mean``/``std`` are the backbone's (as in ``ImagePreprocessing``); ``bf16`` runs the
    encoder under bf16 autocast, as the cached embeddings and serving do.
    """

    def __init__(
        self,
        encoder: ImageEncoder,
        head: nn.Module,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        *,
        bf16: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.bf16 = bf16
        self.channels_last = channels_last
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.float() / 255.0 - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(self.bf16):
            return self.encoder(x).float()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed_pixels(pixels))


class TokenClassifier(_FrozenModeMixin):
    """Tokenised texts (and any inputs the head takes first, e.g. TF-IDF rows) -> logits.

    ``forward(*head_inputs, input_ids, attention_mask)``: the sentence embedding is
    computed from the tokens (trimmed to the batch's longest text) and passed to the head
    after ``head_inputs``, matching ``TextClassifier(tfidf, text)``.
    """

    def __init__(self, encoder: TextEncoder, head: nn.Module, *, bf16: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.bf16 = bf16

    def forward(self, *inputs: Any) -> torch.Tensor:
        *head_inputs, input_ids, attention_mask = inputs
        length = max(int(attention_mask.sum(dim=1).max()), 1)
        with _autocast(self.bf16):
            text = self.encoder(input_ids[:, :length], attention_mask[:, :length]).float()
        return self.head(*head_inputs, text)
