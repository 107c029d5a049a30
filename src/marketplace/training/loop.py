"""One training loop for every head: mini-batches, AdamW, early stopping on validation.

Heads train on cached embeddings (tensors in memory), so an epoch is milliseconds to
seconds; the loop keeps the weights of the best validation epoch and stops after
``patience`` epochs without improvement. Seeded: the same seed, data and config give the
same weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from marketplace.training.optim import LazyAdam


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings shared by all heads."""

    lr: float
    weight_decay: float
    epochs: int
    patience: int
    batch_size: int
    seed: int
    label_smoothing: float = 0.0
    eval_batch_size: int = 1024  # rows per forward pass when scoring val
    # Score the model on val before the first epoch and keep it (epoch 0) unless an epoch
    # beats it: for fine-tuning a model that is already trained.
    evaluate_start: bool = False


@dataclass
class FitResult:
    """Per-epoch history and the epoch whose weights were kept."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_accuracy: float


# A model's inputs: row-aligned tensors, or scipy sparse rows (anything indexable by an
# integer array along its first axis).
Batch = Sequence[Any]
# A batch's inputs and their row numbers in the training set -> augmented inputs. Draws
# keyed by row number give a row the same augmentation whichever DDP worker it lands on.
Augment = Callable[[list[Any], np.ndarray], list[Any]]


class FitFunction(Protocol):
    """``fit``, or a drop-in that trains elsewhere (``training.distributed.data_parallel``):
    trains ``model`` in place and returns its ``FitResult``."""

    def __call__(
        self,
        model: nn.Module,
        train: tuple[Batch, torch.Tensor],
        val: tuple[Batch, torch.Tensor],
        config: FitConfig,
        *,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        augment: Augment | None = None,
    ) -> FitResult: ...


def predict_logits(model: nn.Module, inputs: Batch, batch_size: int = 1024) -> torch.Tensor:
    """Logits for every row of ``inputs``, in eval mode, ``batch_size`` rows at a time."""
    model.eval()
    n = inputs[0].shape[0]
    with torch.inference_mode():
        parts = [
            model(*(x[start : start + batch_size] for x in inputs))
            for start in range(0, n, batch_size)
        ]
    return torch.cat(parts) if parts else torch.zeros(0)


def _evaluate(
    model: nn.Module, inputs: Batch, labels: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    if not len(labels):
        return math.nan, math.nan
    logits = predict_logits(model, inputs, batch_size)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return F.cross_entropy(logits, labels).item(), accuracy


def predict_proba(model: nn.Module, inputs: Batch, batch_size: int = 1024) -> torch.Tensor:
    """Softmax probabilities for every row of ``inputs``."""
    return predict_logits(model, inputs, batch_size).softmax(dim=1)


def fit(
    model: nn.Module,
    train: tuple[Batch, torch.Tensor],
    val: tuple[Batch, torch.Tensor],
    config: FitConfig,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    augment: Callable[[list[Any]], list[Any]] | None = None,
) -> FitResult:
    """Train ``model`` in place; on return it holds the best validation epoch's weights.

    ``augment`` (training batches only) maps a batch's inputs to augmented inputs. Inside a
    torch.distributed group (Ray Train workers: ``training.distributed``) this is
    DDP: each of the N workers takes every N-th row of each batch and gradients are
    averaged, so the steps are those of one process on the whole batch, up to float noise.
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (
        (torch.distributed.get_rank(), torch.distributed.get_world_size())
        if distributed
        else (0, 1)
    )
    if world > 1 and hasattr(model, "training_loss"):
        raise ValueError("a head with its own loss terms trains in one process only")
    forward = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    torch.manual_seed(config.seed + rank)  # dropout: each worker its own masks
    generator = torch.Generator().manual_seed(config.seed)
    (train_inputs, train_labels), (val_inputs, val_labels) = train, val
    # Embedding tables with sparse gradients (the TF-IDF weights of the wide parts, half a
    # million rows) take lazy Adam: a step touches only the rows of the batch's n-grams,
    # not all of them. Everything else takes AdamW, fused (one kernel per tensor).
    sparse_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.EmbeddingBag) and m.sparse
        for p in m.parameters()
    }
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    sparse = [p for p in model.parameters() if p.requires_grad and id(p) in sparse_ids]
    optimisers: list[torch.optim.Optimizer] = []
    if dense:
        optimisers.append(
            torch.optim.AdamW(dense, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        )
    if sparse:
        optimisers.append(LazyAdam(sparse, lr=config.lr))
    schedulers = [
        torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(config.epochs, 1))
        for o in optimisers
    ]
    history: list[dict[str, float]] = []
    best_state = copy.deepcopy(model.state_dict())
    best_accuracy, best_loss, best_epoch, stale = -1.0, math.inf, 0, 0
    if config.evaluate_start:
        best_loss, best_accuracy = _evaluate(model, val_inputs, val_labels, config.eval_batch_size)
    n = len(train_labels)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).numpy()
        total_loss, correct, seen = 0.0, 0, 0
        for start in range(0, n, config.batch_size):
            rows = order[start : start + config.batch_size]
            # This worker's rows (all of them on every worker if fewer than the workers),
            # and its share of the batch: DDP averages the workers' gradients.
            share = 1.0
            if world > 1 and len(rows) >= world:
                size, rows = len(rows), rows[rank::world]
                share = len(rows) * world / size
            labels = train_labels[torch.from_numpy(rows)]
            batch = [x[rows] for x in train_inputs]
            if augment is not None:
                batch = augment(batch, rows)
            if hasattr(model, "training_loss"):  # a head with its own terms (per-branch)
                loss, logits = model.training_loss(batch, labels, config.label_smoothing)
            else:
                logits = forward(*batch)
                loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            for optimiser in optimisers:
                optimiser.zero_grad(set_to_none=True)
            (loss * share if share != 1.0 else loss).backward()
            for optimiser in optimisers:
                optimiser.step()
            total_loss += loss.item() * len(rows)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(rows)
        for scheduler in schedulers:
            scheduler.step()
        if world > 1:  # the epoch's train figures over every worker's rows
            sums = torch.tensor([total_loss, correct, seen], dtype=torch.float64)
            torch.distributed.all_reduce(sums)
            total_loss, correct, seen = sums[0].item(), int(sums[1]), int(sums[2])
        val_loss, val_accuracy = _evaluate(model, val_inputs, val_labels, config.eval_batch_size)
        record = {
            "epoch": float(epoch),
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        improved = val_accuracy > best_accuracy or (
            val_accuracy == best_accuracy and val_loss < best_loss
        )
        if improved:
            best_accuracy, best_loss, best_epoch, stale = val_accuracy, val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    return FitResult(history, best_epoch, best_accuracy)
