"""Data-parallel training on a Ray cluster: ``training.loop.fit`` on N Ray Train workers.

``fit`` is DDP-aware (each worker takes every N-th row of a batch, gradients averaged over
gloo), so N workers take the steps one process takes on the whole batch, up to float noise
(dropout aside: each worker draws its own masks). ``data_parallel`` is a drop-in for
``fit`` that the fine-tuning stages take with ``compute.backend: ray``
(``fit_function``); ``tests/integration/test_ray.py`` checks both against one process on a
two-node cluster.

Cost: the model (encoder and head) and the training and validation inputs travel to the
workers through Ray's object store (``ray.put`` once, a copy per worker): for fine-tuning
on the real export's train and val photos at 260 px, 0.93 GB of uint8 pixels per worker
(4,580 × 3 × 260 × 260 bytes).
"""

from __future__ import annotations

import copy
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from marketplace.compute.ray import ray_session
from marketplace.core.config import ComputeParams
from marketplace.training.loop import Augment, Batch, FitConfig, FitFunction, FitResult, fit


def fit_function(compute: ComputeParams) -> FitFunction:
    """The fit function a ``compute`` section names: ``fit`` in this process for ``local``,
    ``data_parallel(compute)`` for ``ray``."""
    return fit if compute.backend == "local" else data_parallel(compute)


def data_parallel(compute: ComputeParams, storage: Path | None = None) -> FitFunction:
    """A drop-in for ``training.loop.fit`` that trains a copy of the model on Ray
    (``fit_data_parallel``), then loads the kept weights into the model and replays the
    history through ``on_epoch`` (workers cannot log to the driver's MLflow run).
    ``storage``: where Ray Train keeps the checkpoint (a temporary folder if None; on
    several machines it must be storage they all mount)."""

    def fit_on_ray(
        model: nn.Module,
        train: tuple[Batch, torch.Tensor],
        val: tuple[Batch, torch.Tensor],
        config: FitConfig,
        *,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        augment: Augment | None = None,
    ) -> FitResult:
        with tempfile.TemporaryDirectory(prefix="ray-train-") as folder:
            state, result = fit_data_parallel(
                functools.partial(copy.deepcopy, model),  # the starting point, pickled
                train,
                val,
                config,
                compute,
                storage or Path(folder),
                augment=augment,
            )
        model.load_state_dict(state)
        for record in result.history if on_epoch is not None else ():
            on_epoch(record)
        return result

    return fit_on_ray


def fit_data_parallel(
    make_model: Callable[[], Any],
    train: tuple[Any, Any],
    val: tuple[Any, Any],
    config: FitConfig,
    compute: ComputeParams,
    storage: Path,
    *,
    augment: Augment | None = None,
) -> tuple[dict[str, Any], FitResult]:
    """``training.loop.fit`` of ``make_model()`` on ``compute.concurrency`` Ray Train workers
    (``TorchTrainer``, DDP over gloo, ``compute.cpus_per_worker`` CPUs each). ``make_model``
    and ``augment`` must pickle (they run on the workers). Rank 0 reports the kept weights
    and the history as a checkpoint (Ray Train keeps metrics only with one) under
    ``storage`` (on several machines: storage they all mount). Returns the state dict and
    the ``FitResult``."""
    from ray.train import Checkpoint, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(shipped: dict[str, Any]) -> None:
        import ray

        make, train_part, val_part, augment_rows = ray.get(shipped["work"])
        torch.manual_seed(config.seed)  # the same initial weights as one process
        model = make()
        result = fit(model, train_part, val_part, config, augment=augment_rows)
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save({"state": model.state_dict(), "result": result}, f"{folder}/fit.pt")
                checkpoint = Checkpoint.from_directory(folder)
            ray.train.report({"best_val_accuracy": result.best_val_accuracy}, checkpoint)

    with ray_session() as session:
        # Once into the object store (not inside the pickled loop), read by every worker.
        work = session.put((make_model, train, val, augment))
        trainer = TorchTrainer(
            loop,
            train_loop_config={"work": work},
            scaling_config=ScalingConfig(
                num_workers=compute.concurrency,
                resources_per_worker={"CPU": compute.cpus_per_worker},
            ),
            run_config=RunConfig(storage_path=os.fspath(storage)),
        )
        checkpoint = trainer.fit().checkpoint
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / "fit.pt", weights_only=False)
    return saved["state"], saved["result"]
