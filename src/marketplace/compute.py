"""Heavy stages as per-batch functions, run here or on a cluster (``params.yaml`` ``compute``).

A heavy stage is written as ``make(progress=...)``, which loads what it needs once (an
encoder, an index) and returns a per-batch function ``items -> results`` (an array with a
row per item, a dict of them, or a list). In process it runs once on every item; a
``Runner`` (``marketplace.ray_compute``: Ray actors, each of which calls ``make`` once)
calls the very same function batch by batch and puts the results back in input order.
This module imports no Ray, so that serving, which shares the per-batch functions, never does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

BatchFunction = Callable[[list[Any]], Any]  # items -> ndarray [n, ...], dict of them, or list
Runner = Callable[[Callable[..., BatchFunction], Sequence[Any]], Any]


def run_batches(
    make: Callable[..., BatchFunction],
    items: Sequence[Any],
    runner: Runner | None = None,
    *,
    progress: bool = True,
) -> Any:
    """``make(progress=progress)(items)`` here, or the same per batch with ``runner``
    (``marketplace.ray_compute``: on Ray actors, each of which calls ``make`` once)."""
    if runner is None or not items:
        return make(progress=progress)(list(items))
    return runner(make, items)
