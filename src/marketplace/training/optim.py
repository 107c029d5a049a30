"""Lazy Adam for embedding tables trained with sparse, coalesced gradients.

The hashed TF-IDF weights of the text and combined heads are half a million rows, of
which a batch touches a few tens of thousands. Like ``torch.optim.SparseAdam``, this
updates only the touched rows' moments and weights (the same arithmetic: Adam with the
bias corrections folded into the step size); unlike it, it works on the rows directly
(gather, update, scatter) instead of through sparse-tensor additions and masks, which took
~14 ms of each step (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class LazyAdam(torch.optim.Optimizer):
    """Adam over the rows present in each parameter's sparse gradient."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise ValueError("LazyAdam takes sparse gradients; use AdamW for dense ones")
                rows, values = _distinct_rows(param.grad)
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    # two contiguous tables: with both moments side by side in one, the
                    # strided arithmetic made the step twice as long (BENCHMARKS.md)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                step = state["step"]
                exp_avg = state["exp_avg"].index_select(0, rows)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
                exp_avg.mul_(beta1).add_(values, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(values, values, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                denominator = exp_avg_sq.sqrt_().add_(eps)
                update = torch.div(exp_avg, denominator, out=denominator).mul_(-step_size)
                # rows are distinct: gather, add, scatter (faster than a 2-D index_add_)
                param.index_copy_(0, rows, param.index_select(0, rows).add_(update))


def _distinct_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and values of a sparse row gradient, each row once.

    ``SparseLinear`` already yields each row once, in ascending order, but autograd drops
    the "coalesced" flag on the way to ``.grad``: checking that the rows strictly increase
    costs a pass over them, where ``coalesce()`` sorts (and a mark array over the table's
    half a million rows took 0.5 ms a step).
    """
    if grad.is_coalesced():
        return grad.indices()[0], grad.values()
    rows = grad._indices()[0]
    if bool((rows[1:] > rows[:-1]).all()):
        return rows, grad._values()
    grad = grad.coalesce()
    return grad.indices()[0], grad.values()
