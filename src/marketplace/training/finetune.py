"""Optional fine-tuning of the top of an encoder, after its head trained on cached vectors.

Off by default (``train.vision.finetune_blocks`` / ``train.text.finetune_layers`` = 0).
With N > 0 the last N stages of the encoder and the already-trained head train together,
end to end, through the same loop as the heads (``training.loop.fit``) with early stopping
on val; the starting point (frozen encoder, trained head) counts as epoch 0, so fine-tuning
is kept only where it beats it on val.

- vision: photos are the cleaned canvases (``outputs/images``), held in memory as uint8 at
  the encoder's input size; training batches get a random resized crop, a horizontal flip
  and colour jitter (torchvision transforms v2), one draw per photo and step.
- text: listing texts are tokenised once; batches carry the TF-IDF rows too, so the wide
  part of the text model keeps training alongside.

The loop runs in this process (``training.loop.fit``) or, with ``compute.backend: ray``,
data parallel on Ray Train workers (``training.distributed.data_parallel``): the caller
passes the ``fit_function``.

Returns the trained encoder + head and the encoder tensors that changed (the unfrozen
stages), which travel with the model (``ClassifierPackage.encoder_tensors``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from marketplace.core.config import TextHeadParams, VisionHeadParams
from marketplace.features.encoders import ImageEncoder, TextEncoder
from marketplace.features.preprocessing import ImagePreprocessing
from marketplace.models.finetunable import PixelClassifier, TokenClassifier
from marketplace.training.inputs import SplitData
from marketplace.training.loop import FitConfig, FitFunction, FitResult, fit

IMAGE_PREFIX = "image_encoder."
TEXT_PREFIX = "text_encoder."


@dataclass
class Finetuned:
    """An encoder + head trained end to end, with its inputs per split for scoring."""

    model: nn.Module
    inputs: dict[str, list[Any]]  # split -> the model's inputs
    result: FitResult
    encoder_tensors: dict[str, torch.Tensor]  # prefixed keys, unfrozen stages only
    stages: int

    def spec(self) -> dict[str, Any]:
        """What goes into the encoder spec under ``finetuned``."""
        return {
            "stages": self.stages,
            "tensors": len(self.encoder_tensors),
            "best_epoch": self.result.best_epoch,
        }


def load_pixels(
    preprocessing: ImagePreprocessing, files: Sequence[Path], *, workers: int = 2
) -> torch.Tensor:
    """uint8 ``[N, 3, S, S]`` of canvases at the encoder's input size (Pillow decodes with
    the GIL released, so threads use both cores)."""
    if not files:
        size = preprocessing.image_size
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return torch.stack(list(pool.map(preprocessing.pixels_from_file, files, chunksize=32)))


class PhotoAugmentation:
    """Per-photo random resized crop, horizontal flip and colour jitter on uint8 batches
    (``training.loop.Augment``). A photo's draws are keyed by the seed, the step and its
    row in the training set, so it gets the same augmentation in one process or on any
    DDP worker; they are taken under ``torch.random.fork_rng``, leaving torch's global
    generator (dropout's) as it was. Picklable, for Ray Train workers."""

    def __init__(self, image_size: int, seed: int) -> None:
        self.image_size, self.seed, self.step = image_size, seed, 0
        self._transform: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_transform": None}  # built again where it runs

    def __call__(self, batch: list[Any], rows: np.ndarray) -> list[Any]:
        if self._transform is None:
            from torchvision.transforms import v2  # after marketplace.features' torchvision shim

            self._transform = v2.Compose(
                [
                    v2.RandomResizedCrop(self.image_size, scale=(0.6, 1.0), antialias=True),
                    v2.RandomHorizontalFlip(),
                    v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                ]
            )
        self.step += 1
        out = []
        with torch.random.fork_rng(devices=[]):
            for photo, row in zip(batch[0], rows.tolist(), strict=True):
                # v2 draws from torch's global generator: one seed per (run, step, photo).
                torch.manual_seed(hash((self.seed, self.step, row)) & 0x7FFF_FFFF_FFFF_FFFF)
                out.append(self._transform(photo))
        return [torch.stack(out), *batch[1:]]


def _prefixed_epochs(
    on_epoch: Callable[[dict[str, float]], None] | None, offset: int
) -> Callable[[dict[str, float]], None] | None:
    if on_epoch is None:
        return None
    return lambda record: on_epoch({**record, "epoch": record["epoch"] + offset})


def finetune_vision(
    head: nn.Module,
    data: dict[str, SplitData],
    images_dir: Path,
    spec: dict[str, Any],
    params: VisionHeadParams,
    seed: int,
    *,
    epoch_offset: int = 0,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    encoder: ImageEncoder | None = None,
    fit_function: FitFunction = fit,
) -> Finetuned:
    """Fine-tune the last ``params.finetune_blocks`` stages of the image encoder with
    ``head`` (trained, modified in place) on the photos of ``data`` (ids = image ids),
    with ``fit_function``: ``training.loop.fit`` in this process, or data parallel on Ray
    (``training.distributed.data_parallel``)."""
    stages = params.finetune_blocks
    encoder = encoder if encoder is not None else ImageEncoder(spec["encoder"])
    encoder.freeze(stages)
    preprocessing = ImagePreprocessing(
        spec["canvas_size"], spec["image_size"], tuple(spec["mean"]), tuple(spec["std"])
    )
    model = PixelClassifier(
        encoder, head, tuple(spec["mean"]), tuple(spec["std"]), bf16=bool(spec.get("bf16"))
    )
    inputs = {
        name: [load_pixels(preprocessing, [images_dir / f"{i}.jpg" for i in part.ids])]
        for name, part in data.items()
    }
    torch.manual_seed(seed)
    result = fit_function(
        model,
        (inputs["train"], data["train"].labels),
        (inputs["val"], data["val"].labels),
        _config(params, seed),
        on_epoch=_prefixed_epochs(on_epoch, epoch_offset),
        augment=PhotoAugmentation(spec["image_size"], seed) if params.augment else None,
    )
    tensors = {IMAGE_PREFIX + k: v.contiguous() for k, v in encoder.stage_state(stages).items()}
    return Finetuned(model.eval(), inputs, result, tensors, stages)


def finetune_text(
    head: nn.Module,
    data: dict[str, SplitData],
    texts: dict[str, list[str]],
    spec: dict[str, Any],
    params: TextHeadParams,
    seed: int,
    *,
    epoch_offset: int = 0,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    encoder: TextEncoder | None = None,
    fit_function: FitFunction = fit,
) -> Finetuned:
    """Fine-tune the last ``params.finetune_layers`` transformer layers with ``head`` (a
    trained ``TextClassifier``, modified in place); ``texts`` are the listing texts of
    each split, row-aligned with ``data``. ``fit_function`` as for ``finetune_vision``."""
    stages = params.finetune_layers
    encoder = (
        encoder
        if encoder is not None
        else TextEncoder(spec["encoder"], max_tokens=spec["max_tokens"])
    )
    encoder.freeze(stages)
    model = TokenClassifier(encoder, head, bf16=bool(spec.get("bf16")))
    inputs: dict[str, list[Any]] = {}
    for name, part in data.items():
        tokens = encoder.tokenize(list(texts[name]), fixed_length=True)
        inputs[name] = [*part.inputs[:-1], tokens["input_ids"], tokens["attention_mask"]]
    torch.manual_seed(seed)
    result = fit_function(
        model,
        (inputs["train"], data["train"].labels),
        (inputs["val"], data["val"].labels),
        _config(params, seed),
        on_epoch=_prefixed_epochs(on_epoch, epoch_offset),
    )
    tensors = {TEXT_PREFIX + k: v.contiguous() for k, v in encoder.stage_state(stages).items()}
    return Finetuned(model.eval(), inputs, result, tensors, stages)


def _config(params: VisionHeadParams | TextHeadParams, seed: int) -> FitConfig:
    return FitConfig(
        lr=params.finetune_lr,
        weight_decay=params.weight_decay,
        epochs=params.finetune_epochs,
        patience=params.finetune_patience,
        batch_size=params.finetune_batch_size,
        seed=seed,
        label_smoothing=params.label_smoothing,
        eval_batch_size=64,
        evaluate_start=True,
    )
