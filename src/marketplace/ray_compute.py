"""The heavy stages on a Ray cluster: ``compute.backend: ray`` in ``params.yaml``.

Ray Data streams a stage's items to an actor pool; each actor calls the stage's ``make``
once (one encoder or index per worker) and the same per-batch function as the in-process
path (``marketplace.compute``) on each batch. Rows carry their position, so results come
back in input order whatever the scheduling: the stage writes the same files either way
(``tests/integration/test_ray.py`` checks it on a two-node cluster), which is why
``compute`` is no DVC param of any stage.

``RAY_ADDRESS`` names the cluster (unset: a local Ray on this machine, started and shut
down here). Workers read and write files by path, so on several machines the data folder
must be on storage every node mounts at the same path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from marketplace.compute import BatchFunction, Runner
from marketplace.config import ComputeParams


def runner(compute: ComputeParams) -> Runner | None:
    """The runner a ``compute`` section names: ``None`` (in process) for ``local``."""
    if compute.backend == "local":
        return None
    return lambda make, items: ray_map(make, items, compute)


@contextlib.contextmanager
def ray_session() -> Iterator[Any]:
    """The Ray API, connected to ``RAY_ADDRESS`` (or a new local Ray, shut down after)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


class _Worker:
    """One Ray actor: ``make`` once (the model loads once per worker), then every batch."""

    def __init__(self, make: Callable[..., BatchFunction]) -> None:
        self.function = make(progress=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.function(list(batch["item"]))
        if isinstance(results, dict):
            columns = {f"out.{k}": np.asarray(v) for k, v in results.items()}
        elif isinstance(results, np.ndarray):
            columns = {"out": results}
        else:  # Python objects (dataclasses): an object column
            columns = {"out": np.empty(len(results), dtype=object)}
            columns["out"][:] = list(results)
        return {"row": batch["row"], **columns}


def ray_map(
    make: Callable[..., BatchFunction], items: Sequence[Any], compute: ComputeParams
) -> Any:
    """``make()(items)`` computed by ``compute.concurrency`` Ray actors in batches of
    ``compute.batch_size``; the results (array, dict of arrays or list) in input order."""
    with ray_session() as ray:
        ray.data.DataContext.get_current().enable_progress_bars = False
        dataset = ray.data.from_items(
            [{"row": row, "item": item} for row, item in enumerate(items)],
            override_num_blocks=max(1, min(len(items), 4 * compute.concurrency)),
        ).map_batches(
            _Worker,
            fn_constructor_args=(make,),
            batch_size=compute.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=compute.concurrency),
            num_cpus=compute.cpus_per_worker,
        )
        parts: dict[str, list[np.ndarray]] = {}
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for key, value in batch.items():
                parts.setdefault(key, []).append(value)
    order = np.argsort(np.concatenate(parts.pop("row")), kind="stable")
    out = {key: np.concatenate(values)[order] for key, values in parts.items()}
    if "out" not in out:
        return {key.removeprefix("out."): value for key, value in out.items()}
    return out["out"] if out["out"].dtype != object else out["out"].tolist()
