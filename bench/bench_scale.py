"""Catalogue scale (issue 15): compressed FAISS factories at 1M, neighbour lists local vs
Ray, and photo-embedding throughput in process vs on Ray with 1 and 2 workers.

``faiss``: the simulated 1M-product catalogue of ``bench_faiss.py`` (1024-d = the index's
``[text, image]`` halves, clustered like product embeddings, 20 % without a photo), built
with ``marketplace.search.build.build_faiss`` as the index stage does (trained on a seeded
sample, filled in batches). Exact ground truth is ``faiss.knn`` over the same array (no
second 4 GB copy), on ``--queries`` held-out queries (thirds: text, photo, both). For each
factory: build time, serialised size (MiB per million vectors), recall@10 against exact
and batched qps against exact. Then the index's "more like this" lists
(``marketplace.search.build.neighbour_rows``, k = ``index.neighbours``) on a shard of ``--shard``
products, in process and on a local Ray with 2 actors, projected to 1M products.

``embed``: ``stream_catalogue_images(...).collect()`` on the first ``--photos`` cleaned
canvases of the real export (cleaned here into a scratch folder first), in process and with
``compute.backend: ray`` at 1 and 2 workers (each with ``cpus_per_worker`` CPUs), with the
max abs difference of the vectors: img/s and Ray's overhead (BENCHMARKS.md projects the
hours for 1M and 10M photos on N nodes from them, with the arithmetic).

``driver``: the Ray driver's peak memory on a synthetic run (a per-batch function making
``--rows`` × ``--dim`` float32 rows on a local Ray, 2 actors), each way in its own
process: ``stream`` (what the embed stages do now: ``ray_stream`` batches written into the
``.npz`` as they come) against ``gather`` (what they did before: every batch collected,
sorted by row and concatenated as the former ``ray_map`` did, then ``EmbeddingSet.save``).

    nice -n 10 .venv/bin/python bench/bench_scale.py faiss   # bench/results/scale_faiss.json
    nice -n 10 .venv/bin/python bench/bench_scale.py embed   # bench/results/scale_embed.json
    nice -n 10 .venv/bin/python bench/bench_scale.py driver  # bench/results/scale_driver.json
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from bench_faiss import QUERY_KINDS, index_size, make_database, make_queries, make_structure

from marketplace.compute.batches import Runner, run_batches, stream_batches
from marketplace.compute.ray import runner
from marketplace.core.config import load_params
from marketplace.features.embedding import EmbeddingSet, EmbeddingStream
from marketplace.search.build import _neighbour_search, build_faiss
from marketplace.search.index import INDEX_FORMAT, IndexMeta, ProductIndex

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
K = 10


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def save(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def bench_faiss(args: argparse.Namespace) -> None:
    out = args.out
    result: dict = {"n": args.n, "dim": args.dim, "queries": args.queries, "rows": []}
    result["machine"] = {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()}
    cat = make_structure(args.dim, 100, 0)
    started = time.perf_counter()
    xb = make_database(cat, args.n, 0)
    xq, kind = make_queries(cat, args.queries, 0)
    log(f"generated {args.n:,} x {args.dim} in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    _, truth = faiss.knn(xq, xb, K, metric=faiss.METRIC_INNER_PRODUCT)
    exact_s = time.perf_counter() - started
    result["exact"] = {"qps": args.queries / exact_s, "seconds": exact_s}
    log(f"exact: {args.queries / exact_s:.1f} qps")
    keep = None
    for factory in args.factories:
        started = time.perf_counter()
        index = build_faiss(xb, factory)
        build_s = time.perf_counter() - started
        size = index_size(index)
        ivf = faiss.extract_index_ivf(index)
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            started, reps = time.perf_counter(), 0
            while reps == 0 or time.perf_counter() - started < 2:
                _, found = index.search(xq, K)
                reps += 1
            qps = reps * args.queries / (time.perf_counter() - started)
            hit = (found[:, :, None] == truth[:, None, :]).any(axis=2).mean(axis=1)
            row = {
                "factory": factory,
                "nprobe": nprobe,
                "build_s": build_s,
                "mib_per_million": size / 2**20 * 1e6 / args.n,
                "recall_at_10": float(hit.mean()),
                "recall_by_kind": {
                    k: float(hit[kind == i].mean()) for i, k in enumerate(QUERY_KINDS)
                },
                "qps": qps,
                "speedup": qps / result["exact"]["qps"],
            }
            result["rows"].append(row)
            log(json.dumps(row))
        result["peak_rss_gib"] = peak_gib()
        save(out, result)
        if factory == args.neighbour_factory:
            keep, ivf.nprobe = index, args.neighbour_nprobe
        else:
            del index
        gc.collect()
    del xb
    gc.collect()
    if keep is not None:
        result["neighbours"] = neighbour_lists(keep, args)
    result["peak_rss_gib"] = peak_gib()
    save(out, result)


def neighbour_lists(index: faiss.Index, args: argparse.Namespace) -> dict:
    """Neighbour lists of a shard, in process and on a local Ray, projected to ``args.n``."""
    n, k = index.ntotal, PARAMS.index.neighbours
    products = pd.DataFrame(
        {
            "product_id": [f"p{i:07d}" for i in range(n)],
            "title": "",
            "price": np.nan,
            "category": "c",
            "location": "",
            "image_id": None,
        }
    )
    meta = IndexMeta(INDEX_FORMAT, "bench", "1", "", {}, {}, args.neighbour_factory,
                     args.neighbour_nprobe, 0, args.dim, n, n, "simulated")  # fmt: skip
    product_index = ProductIndex(index, products, meta)
    make = functools.partial(_neighbour_search, product_index, k)
    shard = range(args.shard)
    figures = {"factory": args.neighbour_factory, "nprobe": args.neighbour_nprobe, "k": k}
    started = time.perf_counter()
    local = run_batches(make, shard)
    figures["local_s"] = time.perf_counter() - started
    log(f"neighbour lists, {args.shard:,} products in process: {figures['local_s']:.1f} s")
    compute = PARAMS.compute.model_copy(update={"backend": "ray", "concurrency": 2,
                                                "batch_size": 500})  # fmt: skip
    started = time.perf_counter()
    remote = run_batches(make, shard, runner(compute))
    figures["ray_2_workers_s"] = time.perf_counter() - started
    same = (remote["positions"] == local["positions"]).all(axis=1)
    figures["rows_identical"] = float(same.mean())  # the rest: near-ties swapped (float noise)
    figures["max_score_diff"] = float(np.abs(remote["scores"] - local["scores"]).max())
    for key in ("local_s", "ray_2_workers_s"):
        figures[key.replace("_s", "_hours_per_million")] = figures[key] / args.shard * 1e6 / 3600
    log(json.dumps(figures))
    return figures


def bench_embed(args: argparse.Namespace) -> None:
    from marketplace.data.images import clean_image_files, index_image_files
    from marketplace.features.embedding import stream_catalogue_images

    export = ROOT.parent / "shared" / "data" / "marketplace"
    out = args.out
    canvases = Path(tempfile.mkdtemp(prefix="canvases-"))
    ids = sorted(index_image_files(export / "images"))[: args.photos]
    size, quality = PARAMS.clean_images.size, PARAMS.clean_images.jpeg_quality
    list(clean_image_files(ids, export / "images", canvases, size=size, jpeg_quality=quality,
                           progress=False))  # fmt: skip
    photos = len(list(canvases.glob("*.jpg")))
    result: dict = {"photos": photos, "load_at_start": os.getloadavg(), "runs": []}
    result["running_cluster"] = args.running_cluster

    def embed(on: Runner | None = None) -> EmbeddingSet:
        return stream_catalogue_images(
            canvases, PARAMS.embed_images, canvas_size=size, progress=False, runner=on
        ).collect()

    result["cpus"] = sorted(os.sched_getaffinity(0))  # taskset -c 0: one core for all
    local = None
    if not args.no_local:
        started = time.perf_counter()
        local = embed()
        local_s = time.perf_counter() - started
        result["runs"].append({"backend": "local", "seconds": local_s, "img_s": photos / local_s})
        log(json.dumps(result["runs"][-1]))
        save(out, result)
    if args.running_cluster:
        # As on a cluster that is already up (RAY_ADDRESS): Ray starts once, here, and the
        # runs below connect to it (marketplace.compute.ray.ray_session reuses it) instead of each
        # starting and stopping a local Ray inside its timing.
        import ray

        started = time.perf_counter()
        ray.init(log_to_driver=False)
        result["ray_start_s"] = time.perf_counter() - started
    for workers in args.workers:
        compute = PARAMS.compute.model_copy(
            update={
                "backend": "ray",
                "concurrency": workers,
                "batch_size": args.batch,
                "cpus_per_worker": args.cpus_per_worker,
            }
        )
        started = time.perf_counter()
        got = embed(runner(compute))
        seconds = time.perf_counter() - started
        result["runs"].append({
            "backend": "ray", "workers": workers, "cpus_per_worker": args.cpus_per_worker,
            "seconds": seconds, "img_s": photos / seconds,
        })  # fmt: skip
        if local is not None:
            result["runs"][-1].update({
                "overhead_vs_local": seconds / local_s - 1,
                "ids_equal": bool((got.ids == local.ids).all()),
                "max_abs_diff": float(np.abs(got.vectors - local.vectors).max()),
            })  # fmt: skip
        log(json.dumps(result["runs"][-1]))
        save(out, result)
    result["load_at_end"] = os.getloadavg()
    save(out, result)


def synthetic_rows(dim: int, *, progress: bool = False) -> Callable[[list[int]], np.ndarray]:
    """A per-batch function: item ``i`` -> a float32 row of ``i`` (order checkable)."""
    return lambda items: np.repeat(np.asarray(items, np.float32)[:, None], dim, axis=1)


class AnonPeak:
    """The peak of this process's anonymous (private) resident memory, sampled every 20 ms
    from /proc/self/status (``RssAnon``). ru_maxrss also counts the pages of Ray's object
    store (shared memory) that the driver has read: they stay mapped, so it grows up to the
    store's size whatever the driver keeps."""

    def __init__(self) -> None:
        import threading

        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.now()) / 2**30


def driver_run(mode: str, args: argparse.Namespace) -> dict:
    """One way, in this process: the driver's peak memory and the wall time."""
    import ray

    ray.init(num_cpus=2, object_store_memory=2 * 2**30, include_dashboard=False)
    compute = PARAMS.compute.model_copy(
        update={"backend": "ray", "batch_size": args.batch, "concurrency": 2}
    )
    items, ids = list(range(args.rows)), np.array([f"{i:07d}" for i in range(args.rows)])
    make = functools.partial(synthetic_rows, args.dim)
    before, anon_before = peak_gib(), AnonPeak.now() / 2**30
    anon = AnonPeak()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "vectors.npz"
        if mode == "stream":
            blocks = stream_batches(make, items, runner(compute))
            EmbeddingStream(ids, blocks, lambda dim: {"dim": dim}).save(out)
        else:  # the former ray_map: every batch kept, sorted by row, concatenated
            parts = list(stream_batches(make, items, runner(compute)))
            order = np.argsort(np.arange(args.rows), kind="stable")  # its "row" column
            vectors = np.concatenate(parts)[order]
            del parts
            EmbeddingSet(ids, vectors, {"dim": args.dim}).save(out)
            del vectors
        seconds = time.perf_counter() - started
        anon_peak, peak = anon.stop(), peak_gib()
        loaded = np.load(out)["vectors"]
        assert loaded.shape == (args.rows, args.dim) and loaded[-1, 0] == args.rows - 1
        size = out.stat().st_size
    ray.shutdown()
    return {"mode": mode, "seconds": round(seconds, 1),
            "peak_anon_gib": round(anon_peak, 3), "anon_before_gib": round(anon_before, 3),
            "peak_rss_gib": round(peak, 3), "peak_rss_before_gib": round(before, 3),
            "file_gib": round(size / 2**30, 3),
            "vectors_gib": round(args.rows * args.dim * 4 / 2**30, 3)}  # fmt: skip


def bench_driver(args: argparse.Namespace) -> None:
    if args.one:
        print(json.dumps(driver_run(args.one, args)))
        return
    result: dict = {"rows": args.rows, "dim": args.dim, "batch": args.batch, "runs": []}
    for mode in args.modes:
        command = [sys.executable, __file__, "driver", "--one", mode, "--rows", str(args.rows),
                   "--dim", str(args.dim), "--batch", str(args.batch)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result["runs"].append(json.loads(done.stdout.strip().splitlines()[-1]))
        log(str(result["runs"][-1]))
    save(args.out, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("faiss")
    f.add_argument("--n", type=int, default=1_000_000)
    f.add_argument("--dim", type=int, default=1024)
    f.add_argument("--queries", type=int, default=300)
    f.add_argument(
        "--factories",
        nargs="+",
        default=["IVF1024,SQ8", "IVF1024,PQ128", "IVF1024,PQ256", "OPQ128,IVF1024,PQ128"],
    )
    f.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32])
    f.add_argument("--neighbour-factory", default="IVF1024,SQ8")
    f.add_argument("--neighbour-nprobe", type=int, default=16)
    f.add_argument("--shard", type=int, default=5000)
    f.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale_faiss.json")
    e = sub.add_parser("embed")
    e.add_argument("--photos", type=int, default=400)
    e.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    e.add_argument("--cpus-per-worker", type=int, default=1)
    e.add_argument("--batch", type=int, default=PARAMS.compute.batch_size)
    e.add_argument(
        "--running-cluster",
        action="store_true",
        help="start Ray once before the Ray runs (as a running cluster), not inside each",
    )
    e.add_argument("--no-local", action="store_true", help="skip the in-process run")
    e.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale_embed.json")
    d = sub.add_parser("driver")
    d.add_argument("--rows", type=int, default=200_000)
    d.add_argument("--dim", type=int, default=1280)
    d.add_argument("--batch", type=int, default=1024)
    d.add_argument("--modes", nargs="+", default=["gather", "stream"])
    d.add_argument("--one", choices=["gather", "stream"], help=argparse.SUPPRESS)
    d.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale_driver.json")
    args = parser.parse_args()
    {"faiss": bench_faiss, "embed": bench_embed, "driver": bench_driver}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
