"""Data-parallel training on a Ray cluster: ``training.loop.fit`` on N Ray Train workers.

``fit`` is DDP-aware (each worker takes every N-th row of a batch, gradients averaged over
gloo), so N workers take the steps one process takes on the whole batch, up to float noise
(``tests/integration/test_ray.py`` checks it on a two-node cluster).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from marketplace.config import ComputeParams
from marketplace.ray_compute import ray_session
from marketplace.training.loop import FitConfig, FitResult, fit


def fit_data_parallel(
    make_model: Callable[[], Any],
    train: tuple[Any, Any],
    val: tuple[Any, Any],
    config: FitConfig,
    compute: ComputeParams,
    storage: Path,
) -> tuple[dict[str, Any], FitResult]:
    """``training.loop.fit`` of ``make_model()`` on ``compute.concurrency`` Ray Train workers
    (``TorchTrainer``, DDP over gloo, ``compute.cpus_per_worker`` CPUs each). Rank 0 reports
    the kept weights and the history as a checkpoint (Ray Train keeps metrics only with
    one) under ``storage`` (on several machines: storage they all mount). Returns the
    state dict and the ``FitResult``."""
    from ray.train import Checkpoint, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop() -> None:
        import ray.train

        torch.manual_seed(config.seed)  # the same initial weights as one process
        model = make_model()
        result = fit(model, train, val, config)
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save({"state": model.state_dict(), "result": result}, f"{folder}/fit.pt")
                checkpoint = Checkpoint.from_directory(folder)
            ray.train.report({"best_val_accuracy": result.best_val_accuracy}, checkpoint)

    with ray_session():
        trainer = TorchTrainer(
            loop,
            scaling_config=ScalingConfig(
                num_workers=compute.concurrency,
                resources_per_worker={"CPU": compute.cpus_per_worker},
            ),
            run_config=RunConfig(storage_path=str(storage)),
        )
        checkpoint = trainer.fit().checkpoint
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / "fit.pt", weights_only=False)
    return saved["state"], saved["result"]
