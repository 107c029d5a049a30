"""The heavy stages on a Ray cluster: ``compute.backend: ray`` in ``params.yaml``.

Ray Data streams a stage's items to an actor pool; each actor calls the stage's ``make``
once (one encoder or index per worker) and the same per-batch function as the in-process
path (``marketplace.compute.batches``) on each batch. The dataset runs with ``preserve_order``, so
batches come back to the driver in input order and one at a time (rows carry their position,
checked on arrival): a stage writes them as they come, and the driver holds one batch
(the object store holds the ones that finished early), not every result. The stage writes
the same files either way (``tests/integration/test_ray.py`` checks it on a two-node
cluster), which is why ``compute`` is no DVC param of any stage.

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

from marketplace.compute.batches import BatchFunction, Runner
from marketplace.core.config import ComputeParams


def runner(compute: ComputeParams) -> Runner | None:
    """The runner a ``compute`` section names: ``None`` (in process) for ``local``."""
    if compute.backend == "local":
        return None
    return lambda make, items: ray_stream(make, items, compute)


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


def ray_stream(
    make: Callable[..., BatchFunction], items: Sequence[Any], compute: ComputeParams
) -> Iterator[Any]:
    """``make()`` on ``items`` by ``compute.concurrency`` Ray actors in batches of
    ``compute.batch_size``: each batch's results (array, dict of arrays or list), in input
    order, as they come."""
    with ray_session() as ray:
        ray.data.DataContext.get_current().enable_progress_bars = False
        # One input block per batch: an actor's output block is then one batch, which is
        # what the driver holds (fewer, larger blocks came back as ~128 MiB each).
        dataset = ray.data.from_items(
            [{"row": row, "item": item} for row, item in enumerate(items)],
            override_num_blocks=max(1, -(-len(items) // compute.batch_size)),
        ).map_batches(
            _Worker,
            fn_constructor_args=(make,),
            batch_size=compute.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=compute.concurrency),
            num_cpus=compute.cpus_per_worker,
        )
        # This dataset's own context (a copy), so no other dataset of the driver changes.
        dataset.context.execution_options.preserve_order = True
        done = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            rows = batch.pop("row")
            if not np.array_equal(rows, np.arange(done, done + len(rows))):
                raise RuntimeError(f"Ray Data returned rows out of order after row {done}")
            done += len(rows)
            if "out" not in batch:
                yield {key.removeprefix("out."): value for key, value in batch.items()}
            else:
                out = batch["out"]
                yield out if out.dtype != object else out.tolist()
        if done != len(items):
            raise RuntimeError(f"Ray Data returned {done} rows of {len(items)}")
