"""A growing catalogue: `dvc repro` after a 6 % delta against a cold build, and split moves.

The protocol of the living-catalogue targets, on the real export (``--export``; or a seeded
random subset of ``--products`` of its products, when a full-size run does not fit):

1. ``old``: a seeded random 94 % (``--share``) of the products (their image rows and photos),
   ``new``: all of them (``marketplace.data.delta.subset_export``).
2. Project A (a scratch copy of this project: git + DVC, its own MLflow store):
   ``marketplace.data.ingest --from old`` + ``dvc repro`` (a cold build of 94 %), then
   ``marketplace.data.ingest --from new`` + ``dvc repro`` (incremental: the heavy stages' outs are
   ``persist: true`` and reuse what is unchanged).
3. Project B: ``marketplace.data.ingest --from new`` + ``dvc repro`` (a cold build of 100 %).

Each stage's time is taken from ``dvc repro``'s own output (from its "Running stage" line to
the next one, so DVC's hashing of the stage's outs counts), the whole repro's as wall time.
Reported: per stage and in total, incremental / cold; the heavy stages' reused / computed
counts; how many of the 94 % products changed split between A's two builds (stable split:
0), and, for contrast, how many the former seeded shuffle would have moved; and the
incremental and cold outputs' agreement (ids identical, max |vector difference|).

    nice -n 10 python bench/bench_living.py                    # all 6,732 products
    nice -n 10 python bench/bench_living.py --products 1500    # a real-data subset

Writes ``bench/results/living[_<products>].json`` and prints Markdown. The machine is
shared: compare the ratios, which come from one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from marketplace.data.delta import read_export, subset_export

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "MLproject")
PROJECT_DIRS = ("pipeline", "src")
HEAVY = ("clean_images", "embed_images", "embed_text", "thumbnails")
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def env(root: Path = ROOT) -> dict[str, str]:
    """The environment of a command in the project at ``root`` (its own code first, so an
    edit of this work tree during a run changes nothing)."""
    out = dict(os.environ)
    out.pop("MLFLOW_TRACKING_URI", None)
    out.pop("MLFLOW_REGISTRY_URI", None)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out["DVC_NO_ANALYTICS"] = "1"
    out["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root)])
    return out


def sh(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, env=env(cwd), capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")


def project(root: Path) -> Path:
    """A scratch copy of this project (dvc.yaml, params, code) as a git + DVC repo."""
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, root / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        sh(cmd, root)
    return root


def repro(root: Path, export: Path) -> dict[str, object]:
    """``marketplace ingest --from export`` then a timed ``dvc repro``: per stage and in all."""
    sh([sys.executable, "-m", "marketplace.data.ingest", "--from", str(export)], root)
    started = time.perf_counter()
    process = subprocess.Popen(
        ["dvc", "repro"],
        cwd=root,
        env=env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stages: dict[str, float] = {}
    current, since = None, started
    log = []
    assert process.stdout is not None
    for line in process.stdout:
        log.append(line)
        match = STAGE_LINE.search(line)
        if match:
            now = time.perf_counter()
            if current:
                stages[current] = now - since
            current, since = match.group(1), now
    if process.wait():
        raise SystemExit("dvc repro failed:\n" + "".join(log[-60:]))
    end = time.perf_counter()
    if current:
        stages[current] = end - since
    metrics = {
        s: json.loads((root / "metrics" / f"{s}.json").read_text())
        for s in HEAVY
        if (root / "metrics" / f"{s}.json").is_file()
    }
    return {"total_s": end - started, "stages_s": stages, "heavy_metrics": metrics}


def read_splits(root: Path) -> dict[str, str]:
    return {
        i: name
        for name in ("train", "val", "test")
        for i in (root / "outputs" / "split" / f"{name}.txt").read_text().split()
    }


def legacy_split(ids_by_category: pd.DataFrame, seed: int, val: float, test: float) -> dict:
    """The former split (a seeded shuffle per category), for the contrast only."""
    rng = np.random.default_rng(seed)
    out = {}
    for _, group in sorted(ids_by_category.groupby("root_category"), key=lambda kv: kv[0]):
        ids = np.array(sorted(group["product_id"]))
        rng.shuffle(ids)
        n_test, n_val = round(len(ids) * test), round(len(ids) * val)
        out |= {i: "test" for i in ids[:n_test]}
        out |= {i: "val" for i in ids[n_test : n_test + n_val]}
        out |= {i: "train" for i in ids[n_test + n_val :]}
    return out


def agreement(a: Path, b: Path) -> dict[str, object]:
    """Incremental against cold outs: same ids and keys, the largest vector difference."""
    out: dict[str, object] = {}
    for name in ("images.npz", "text.npz"):
        with (
            np.load(a / "outputs/embeddings" / name) as x,
            np.load(b / "outputs/embeddings" / name) as y,
        ):
            same = x["ids"].tolist() == y["ids"].tolist()
            diff = float(np.abs(x["vectors"] - y["vectors"]).max()) if same else None
            out[name] = {"ids_identical": same, "max_abs_diff": diff}
    for name in ("images", "thumbnails"):
        fa = {p.name: p.read_bytes() for p in (a / "outputs" / name).iterdir()}
        fb = {p.name: p.read_bytes() for p in (b / "outputs" / name).iterdir()}
        out[name] = {"files": len(fa), "byte_identical": fa == fb}
    return out


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--export",
        type=Path,
        default=Path(
            os.environ.get("MARKETPLACE_REAL_EXPORT", ROOT.parent / "shared/data/marketplace")
        ),
        help="the real export (env MARKETPLACE_REAL_EXPORT; default ../shared/data/marketplace)",
    )
    parser.add_argument("--products", type=int, default=0, help="a seeded subset (0: all)")
    parser.add_argument("--share", type=float, default=0.94)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    args = parser.parse_args()
    if not (args.export / "Products.csv").is_file():
        raise SystemExit(f"no export at {args.export}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-living-"))
    try:
        ids = sorted({p["id"].strip() for p in read_export(args.export).products})
        rnd = random.Random(args.seed)
        if args.products:
            ids = sorted(rnd.sample(ids, args.products))
        old_ids = sorted(rnd.sample(ids, round(len(ids) * args.share)))
        subset_export(args.export, scratch / "new", ids)
        subset_export(args.export, scratch / "old", old_ids)
        a, b = project(scratch / "a"), project(scratch / "b")
        old_build = repro(a, scratch / "old")
        splits_before = read_splits(a)
        listings_before = pd.read_parquet(a / "outputs/clean/listings.parquet")
        cold = repro(b, scratch / "new")
        incremental = repro(a, scratch / "new")
        splits_after = read_splits(a)
        listings_after = pd.read_parquet(a / "outputs/clean/listings.parquet")
        existing = [i for i in splits_before if i in splits_after]
        moved = sum(splits_before[i] != splits_after[i] for i in existing)
        params = __import__("yaml").safe_load((a / "params.yaml").read_text())["split"]
        cols = ["product_id", "root_category"]
        legacy = [
            legacy_split(
                frame[cols].drop_duplicates("product_id"),
                params["seed"],
                params["val_fraction"],
                params["test_fraction"],
            )
            for frame in (listings_before, listings_after)
        ]
        legacy_moved = sum(legacy[0][i] != legacy[1].get(i) for i in existing)
        heavy_inc = sum(incremental["stages_s"].get(s, 0.0) for s in HEAVY)
        heavy_cold = sum(cold["stages_s"].get(s, 0.0) for s in HEAVY)
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "products": {"new": len(ids), "old": len(old_ids), "added": len(ids) - len(old_ids)},
            "old_build": old_build,
            "cold": cold,
            "incremental": incremental,
            "ratios": {
                "heavy_stages": heavy_inc / heavy_cold,
                "repro": incremental["total_s"] / cold["total_s"],  # type: ignore[operator]
                **{
                    s: incremental["stages_s"][s] / cold["stages_s"][s]
                    for s in HEAVY
                    if s in incremental["stages_s"] and s in cold["stages_s"]
                },
            },
            "split": {
                "existing_products": len(existing),
                "moved": moved,
                "moved_by_former_shuffle": legacy_moved,
            },
            "agreement": agreement(a, b),
        }
        name = f"living_{args.products}.json" if args.products else "living.json"
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
        print("| stage | cold (s) | incremental (s) | ratio |\n|---|---|---|---|")
        for stage, seconds in cold["stages_s"].items():  # type: ignore[union-attr]
            inc = incremental["stages_s"].get(stage)  # type: ignore[union-attr]
            ratio = f"{inc / seconds:.3f}" if inc is not None else "skipped"
            print(f"| {stage} | {seconds:.1f} | {inc if inc is None else f'{inc:.1f}'} | {ratio} |")
        print(f"| heavy four | {heavy_cold:.1f} | {heavy_inc:.1f} | {heavy_inc / heavy_cold:.3f} |")
        print(
            f"| dvc repro | {cold['total_s']:.1f} | {incremental['total_s']:.1f} | "
            f"{result['ratios']['repro']:.3f} |"
        )
        print(json.dumps({k: result[k] for k in ("products", "split", "agreement", "cpu")}))
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
