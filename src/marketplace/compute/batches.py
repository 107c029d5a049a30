"""Heavy stages as per-batch functions, run here or on a cluster (``params.yaml`` ``compute``).

A heavy stage is written as ``make(progress=...)``, which loads what it needs once (an
encoder, an index) and returns a per-batch function ``items -> results`` (an array with a
row per item, a dict of them, or a list). In process it runs once on every item; a
``Runner`` (``marketplace.compute.ray``: Ray actors, each of which calls ``make`` once)
calls the very same function batch by batch and yields the batches' results in input
order, so a stage can write them as they come (``stream_batches``) instead of holding all
of them (``run_batches``). This module imports no Ray, so that serving, which shares the
per-batch functions, never does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

BatchFunction = Callable[[list[Any]], Any]  # items -> ndarray [n, ...], dict of them, or list
# (make, items) -> each batch's results, in input order
Runner = Callable[[Callable[..., BatchFunction], Sequence[Any]], Iterator[Any]]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of ``size`` (the last may be shorter). Slices, not
    copies into tuples (``itertools.batched``, Python 3.12): a NumPy array's batches stay
    arrays (views) that index others."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def stream_batches(
    make: Callable[..., BatchFunction],
    items: Sequence[Any],
    runner: Runner | None = None,
    *,
    progress: bool = True,
) -> Iterator[Any]:
    """The results of ``make(progress=progress)`` on ``items`` as consecutive blocks, in
    input order: here one block of all (``make()(items)``), with ``runner`` one per batch
    (``marketplace.compute.ray``: on Ray actors, each of which calls ``make`` once)."""
    if runner is None or not items:
        yield make(progress=progress)(list(items))
        return
    yield from runner(make, items)


def run_batches(
    make: Callable[..., BatchFunction],
    items: Sequence[Any],
    runner: Runner | None = None,
    *,
    progress: bool = True,
) -> Any:
    """``make(progress=progress)(items)`` here, or the same put together from ``runner``'s
    batches (all results in memory; ``stream_batches`` for one block at a time)."""
    return concat_results(list(stream_batches(make, items, runner, progress=progress)))


def concat_results(blocks: list[Any]) -> Any:
    """Consecutive blocks of results (arrays, dicts of arrays or lists) as one."""
    if len(blocks) == 1:
        return blocks[0]
    first = blocks[0]
    if isinstance(first, dict):
        return {key: np.concatenate([block[key] for block in blocks]) for key in first}
    if isinstance(first, np.ndarray):
        return np.concatenate(blocks)
    return [result for block in blocks for result in block]
