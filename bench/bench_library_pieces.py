"""What two hand-written replacements of library pieces saved, measured on this machine.

The head-only rerun (``train_combined`` + ``index``, BENCHMARKS.md) once used

- a ``Dropout`` drawing its mask with ``rand_like`` instead of ``nn.Dropout``'s
  ``bernoulli_``, and
- ``exit_process``: stages ended with ``os._exit`` after running ``threading._shutdown``
  and the ``atexit`` handlers by hand, skipping CPython's teardown.

Both were replaced by the library: ``nn.Dropout``, and a normal interpreter exit after
``gc.freeze()`` (a public API that spares the finalising collections). This benchmark
measures what each costs, so BENCHMARKS.md can say whether the head-only rerun target
(≤ 30 s median) needs more:

- dropout: forward + backward of the combined head's shapes, and one epoch of an
  ``MLPHead`` like the combined model's branches (4,714 rows, batch 128);
- exit: the time from the end of a process's work to the end of the process, for one that
  imports what the ``index`` stage imports and loads the packaged MiniLM, ending normally,
  normally after ``gc.freeze()``, or with ``os._exit``.

Usage: python bench/bench_library_pieces.py [--repeats 7] [--project .] [--only combined]
(``--project``: a project after ``dvc repro``, e.g. this one after ``make demo``.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "library_pieces.json"


class RandLikeDropout(nn.Module):
    """The replaced layer, as it was (models.heads.Dropout up to this benchmark)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))


def _min_ms(fn, repeats: int, inner: int) -> float:
    """The fastest of ``repeats`` timings (the least disturbed by a shared machine)."""
    for _ in range(inner):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner * 1000)
    return min(times)


def _epoch(dropout: type[nn.Module]) -> None:
    """One epoch of a 1280 -> 512 -> 13 MLP with input and hidden dropout, batch 128."""
    torch.manual_seed(0)
    model = nn.Sequential(
        dropout(0.3), nn.Linear(1280, 512), nn.GELU(), dropout(0.3), nn.Linear(512, 13)
    ).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs, labels = torch.randn(4714, 1280), torch.randint(0, 13, (4714,))
    for start in range(0, 4714, 128):
        logits = model(inputs[start : start + 128])
        loss = nn.functional.cross_entropy(logits, labels[start : start + 128])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def bench_combined_training(project: Path, repeats: int) -> dict[str, float]:
    """Seconds for the combined head's real training on ``project``'s outputs (after
    ``dvc repro``), with ``nn.Dropout`` and with the replaced layer: a fixed number of
    epochs (no early stop, which would stop the two at different epochs), and with the
    params as they are."""
    from unittest import mock

    import pandas as pd

    from marketplace.core import paths
    from marketplace.core.config import load_params
    from marketplace.data.labels import LabelMap
    from marketplace.data.split import read_split
    from marketplace.features.embedding import EmbeddingSet
    from marketplace.training.inputs import TextFeatures
    from marketplace.training.train import train_classifier

    root = project.resolve()
    params = load_params(root / "params.yaml").train
    fixed = params.model_copy(
        update={"combined": params.combined.model_copy(update={"epochs": 10, "patience": 10})}
    )
    inputs = {
        "listings": pd.read_parquet(root / paths.LISTINGS_FILE),
        "splits": read_split(root / paths.SPLIT_DIR),
        "label_map": LabelMap.load(root / paths.LABEL_MAP_FILE),
        "params": params,
        "images": EmbeddingSet.load(root / paths.IMAGE_EMBEDDINGS_FILE),
        "texts": EmbeddingSet.load(root / paths.TEXT_EMBEDDINGS_FILE),
        "text_features": TextFeatures.load(root / paths.TFIDF_FILE),
    }
    out: dict[str, float] = {}
    for label, train_params in (("10_epochs", fixed), ("as_params", params)):
        times: dict[str, list[float]] = {"nn_dropout": [], "rand_like": []}
        epochs: dict[str, int] = {}
        for _ in range(repeats):  # interleaved: the machine's load hits both alike
            for name in times:
                layer = nn.Dropout if name == "nn_dropout" else RandLikeDropout
                with mock.patch.object(nn, "Dropout", layer):
                    start = time.perf_counter()
                    trained = train_classifier("combined", **{**inputs, "params": train_params})
                    times[name].append(time.perf_counter() - start)
                epochs[name] = len(trained.history)
        for name in times:
            out[f"{name}_combined_{label}_s"] = min(times[name])
            out[f"{name}_combined_{label}_epochs"] = float(epochs[name])
    return out


def bench_dropout(repeats: int) -> dict[str, float]:
    variants = {"nn_dropout": nn.Dropout, "rand_like": RandLikeDropout}
    out: dict[str, float] = {}
    for dim in (512, 1280):
        x = torch.randn(128, dim, requires_grad=True)
        for name, dropout in variants.items():
            layer = dropout(0.3).train()
            out[f"{name}_fwd_bwd_128x{dim}_ms"] = _min_ms(
                lambda layer=layer, x=x: layer(x).sum().backward(), repeats, 200
            )
    epochs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved: the machine's load hits both alike
        for name, dropout in variants.items():
            start = time.perf_counter()
            _epoch(dropout)
            epochs[name].append((time.perf_counter() - start) * 1000)
    out.update({f"{name}_mlp_epoch_ms": min(t) for name, t in epochs.items()})
    return out


_STAGE_LIKE = (
    "import faiss, mlflow, pandas, torch\n"
    "import marketplace.search.build, marketplace.mlops.registry, marketplace.mlops.tracking\n"
    "from marketplace.features.encoders import TextEncoder\n"
    "TextEncoder('minilm')\n"
    "import sys, time\n"
    "print(time.time(), flush=True)\n"
)


def bench_exit(repeats: int) -> dict[str, float]:
    """Seconds from the end of a stage-like process's work to the end of the process."""
    variants = {
        "normal_exit": _STAGE_LIKE,
        "gc_freeze_then_normal_exit": _STAGE_LIKE.replace(
            "print(", "import gc; gc.freeze()\nprint("
        ),
        "os_exit": _STAGE_LIKE + "import os; os._exit(0)\n",
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved: the machine's load hits both alike
        for name, code in variants.items():
            out = subprocess.run(
                [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
            )
            ended = time.time()
            times[name].append(ended - float(out.stdout.split()[-1]))
    result = {f"{name}_teardown_s_median": statistics.median(t) for name, t in times.items()}
    result.update({f"{name}_teardown_s_min": min(t) for name, t in times.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--project", type=Path, help="also time the combined head's training on its outputs"
    )
    parser.add_argument("--only", choices=("dropout", "exit", "combined"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.only in (None, "dropout"):
        results["dropout"] = bench_dropout(args.repeats)
    if args.only in (None, "exit"):
        results["exit"] = bench_exit(args.repeats)
    if args.project and args.only in (None, "combined"):
        results["combined"] = bench_combined_training(args.project, args.repeats)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
