"""Benchmark the "similar products" FAISS indexes at catalogue scale, on simulated vectors.

What: for each index type the product offers (``Flat``, ``IVF{nlist},Flat``, ``HNSW{M}``,
built with ``faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)``), measure the
build time (train + add), the index size (``faiss.write_index`` to a scratch file), recall@10
against exact search (``Flat``) on held-out queries, the single-query latency (batch of 1,
p50) and the batched throughput (all queries in one call), and the speed-up over ``Flat``.

Why: the issue asks for "FAISS at scale, simulated: 1M vectors of the embedding dimension;
recall@10 against exact search and the speed-up, for each index type offered". The real
catalogue has a few thousand products, so the vectors are simulated.

The simulated catalogue (seeded, deterministic): ANN recall on isotropic noise in 1024-d is a
meaningless worst case (every point is about equally far from every other), so the generator
imitates the structure of real product embeddings:

* 13 categories, each with ``--subclusters`` sub-clusters (product types); category and
  sub-cluster popularity follow power laws (p ∝ 1/rank for categories, 1/sqrt(rank) for
  sub-clusters), so a few groups are large and many are small, as in a marketplace.
* Each product is the concatenation of a 512-d text half and a 512-d image half. For each
  half (independently, with its own centres, but the same category/sub-cluster for both
  halves), a category centre is a random unit vector, a sub-cluster centre is
  ``normalise(category centre + noise(1.0))`` and a product is
  ``normalise(sub-cluster centre + noise(0.8))``, where ``noise(s)`` is Gaussian with expected
  norm ``s`` and an anisotropic spectrum (variance of coordinate k ∝ 1/(k+1), an effective
  dimension of about 28 per half, like real embeddings whose variance sits in a few tens of
  directions). Cosine to the sub-cluster centre is about 0.78, between sub-clusters of a
  category about 0.5, between categories about 0.
* About 20 % of products have no photo: their image half is zeros.
* Queries are held-out products (always with a photo), in equal thirds: text-only
  ``[t, 0]``, image-only ``[0, i]`` and both ``[t, i] / 2``.

How: the exact ``Flat`` search is the ground truth at each N. ``IVF`` is trained on a random
sample of ``64 * nlist`` vectors (nlist defaults to the power of two nearest sqrt(N)) and
searched with several nprobe; ``HNSW32`` (efConstruction 40, the FAISS default) with several
efSearch. HNSW runs at ``--hnsw-n`` vectors (default: ``--n``; timed on the 2-core development
machine at 50k and 200k, a 1M build extrapolates to about 10 min, so it runs at 1M). With a
smaller ``--hnsw-n`` (the first ``--hnsw-n`` vectors of the same catalogue), Flat and IVF are
run again at that N so that every HNSW row is compared like with like; the JSON says which N
each row used, and the build time of HNSW at ``--n`` is then given only as a labelled
N log N extrapolation, never as a measurement. The JSON is rewritten after each index, so an
interrupted run keeps what it measured.

Run by hand (results in BENCHMARKS.md), under ``nice`` on a shared machine::

    nice -n 19 .venv/bin/python bench/bench_faiss.py            # writes bench/results/faiss.json
    nice -n 19 .venv/bin/python bench/bench_faiss.py --n 20000 --hnsw-n 20000 --out /tmp/f.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
K = 10
N_CATEGORIES = 13
SUB_NOISE = 1.0  # expected noise norm, category centre -> sub-cluster centre
ITEM_NOISE = 0.8  # expected noise norm, sub-cluster centre -> product
NO_PHOTO_SHARE = 0.2
QUERY_KINDS = ("text", "image", "both")
CHUNK = 50_000
ADD_CHUNK = 100_000


@dataclass
class Row:
    """One index configuration measured at one catalogue size."""

    index: str
    factory: str
    n: int
    param: str
    build_s: float
    train_s: float
    size_bytes: int
    recall_at_10: float
    recall_by_kind: dict[str, float]
    p50_ms_batch1: float
    single_queries_timed: int
    qps_batched: float
    speedup_batched: float = 1.0
    speedup_batch1: float = 1.0
    note: str = ""
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (in place, returned)."""
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def noise_scales(half: int) -> np.ndarray:
    """Per-coordinate std of the anisotropic noise, scaled to expected norm 1."""
    s = 1.0 / np.sqrt(np.arange(1, half + 1, dtype=np.float64))
    return (s / np.linalg.norm(s)).astype(np.float32)


@dataclass
class Catalogue:
    """Cluster structure of the simulated catalogue (both halves)."""

    half: int
    cat_of_sub: np.ndarray  # (n_sub,) category of each sub-cluster
    sub_p: np.ndarray  # (n_sub,) probability of a product being in each sub-cluster
    centres: tuple[np.ndarray, np.ndarray]  # (n_sub, half) text / image sub-cluster centres
    scales: np.ndarray


def make_structure(dim: int, subclusters: int, seed: int) -> Catalogue:
    """Category and sub-cluster centres and popularity, deterministic in ``seed``."""
    half = dim // 2
    rng = np.random.default_rng([seed, 0])
    scales = noise_scales(half)
    cat_p = 1.0 / np.arange(1, N_CATEGORIES + 1)
    within = 1.0 / np.sqrt(np.arange(1, subclusters + 1))
    sub_p = (cat_p[:, None] * within[None, :] / within.sum()).ravel()
    sub_p /= sub_p.sum()
    cat_of_sub = np.repeat(np.arange(N_CATEGORIES), subclusters)
    centres = []
    for _ in range(2):  # text, image
        cats = normalise(rng.standard_normal((N_CATEGORIES, half), dtype=np.float32))
        z = rng.standard_normal((N_CATEGORIES * subclusters, half), dtype=np.float32)
        centres.append(normalise(cats[cat_of_sub] + SUB_NOISE * z * scales))
    return Catalogue(half, cat_of_sub, sub_p, (centres[0], centres[1]), scales)


def make_products(
    cat: Catalogue, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` products as normalised (text, image) halves, each (n, half) float32."""
    sub = rng.choice(len(cat.sub_p), size=n, p=cat.sub_p)
    halves = []
    for centres in cat.centres:
        z = rng.standard_normal((n, cat.half), dtype=np.float32)
        halves.append(normalise(centres[sub] + ITEM_NOISE * z * cat.scales))
    return halves[0], halves[1]


def make_database(cat: Catalogue, n: int, seed: int) -> np.ndarray:
    """(n, 2*half) indexed vectors; 20 % have a zero image half. Any prefix is a random sample."""
    xb = np.empty((n, 2 * cat.half), dtype=np.float32)
    for c, start in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([seed, 1, c])
        m = min(CHUNK, n - start)
        text, image = make_products(cat, m, rng)
        image[rng.random(m) < NO_PHOTO_SHARE] = 0.0
        xb[start : start + m, : cat.half] = text
        xb[start : start + m, cat.half :] = image
    return xb


def make_queries(cat: Catalogue, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out queries, kinds interleaved: text-only, image-only, both/2. Returns (xq, kind)."""
    rng = np.random.default_rng([seed, 2])
    text, image = make_products(cat, n, rng)
    kind = np.arange(n) % len(QUERY_KINDS)
    xq = np.zeros((n, 2 * cat.half), dtype=np.float32)
    xq[kind != 1, : cat.half] = text[kind != 1]
    xq[kind != 0, cat.half :] = image[kind != 0]
    xq[kind == 2] /= 2.0
    return xq, kind


# --------------------------------------------------------------------------- measures


def index_size(index: faiss.Index) -> int:
    """Bytes of the serialised index (streamed to a scratch file, so no extra RAM)."""
    fd, path = tempfile.mkstemp(suffix=".faiss")
    os.close(fd)
    try:
        faiss.write_index(index, path)
        return os.path.getsize(path)
    finally:
        os.remove(path)


def recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-query recall@k: share of the exact top-k found (missing ids are -1, never match)."""
    return (found[:, :, None] == truth[:, None, :]).any(axis=2).mean(axis=1)


def batched_search(
    index: faiss.Index, xq: np.ndarray, min_s: float = 1.0
) -> tuple[float, np.ndarray]:
    """(qps, ids) of searching all queries in one call, repeated until ``min_s`` elapsed."""
    reps, elapsed = 0, 0.0
    while True:
        t0 = time.perf_counter()
        _, ids = index.search(xq, K)
        elapsed += time.perf_counter() - t0
        reps += 1
        if elapsed >= min_s:
            return reps * len(xq) / elapsed, ids


def single_latency(
    index: faiss.Index, xq: np.ndarray, budget_s: float, max_q: int
) -> tuple[float, int]:
    """(p50 ms, count) of one-query searches, in query order, within a time budget (>= 3)."""
    times: list[float] = []
    start = time.perf_counter()
    for i in range(min(max_q, len(xq))):
        t0 = time.perf_counter()
        index.search(xq[i : i + 1], K)
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    return float(np.median(times)) * 1e3, len(times)


@dataclass
class Bench:
    """Queries, ground truth and timing budgets shared by the rows of one catalogue size."""

    xq: np.ndarray
    kind: np.ndarray
    single_budget_s: float
    single_max: int
    truth: np.ndarray | None = None


def measure(bench: Bench, index: faiss.Index, head: dict) -> Row:
    """Search measures of an already built and parameterised index."""
    qps, ids = batched_search(index, bench.xq)
    if bench.truth is None:  # this is the exact index: its answer is the ground truth
        bench.truth = ids
    per_query = recall(ids, bench.truth)
    by_kind = {k: float(per_query[bench.kind == i].mean()) for i, k in enumerate(QUERY_KINDS)}
    p50, count = single_latency(index, bench.xq, bench.single_budget_s, bench.single_max)
    return Row(
        **head,
        recall_at_10=float(per_query.mean()),
        recall_by_kind=by_kind,
        p50_ms_batch1=p50,
        single_queries_timed=count,
        qps_batched=qps,
    )


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- indexes


def build(
    factory: str, xb: np.ndarray, train: np.ndarray | None, ef_construction: int
) -> tuple[faiss.Index, float, float]:
    """(index, train_s, build_s) of a factory index; build_s includes training."""
    index = faiss.index_factory(xb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if factory.startswith("HNSW"):
        index.hnsw.efConstruction = ef_construction
    t0 = time.perf_counter()
    if train is not None:
        index.train(train)
    train_s = time.perf_counter() - t0
    for start in range(0, len(xb), ADD_CHUNK):  # chunked only to log progress
        index.add(xb[start : start + ADD_CHUNK])
        if len(xb) > ADD_CHUNK:
            log(f"  added {min(start + ADD_CHUNK, len(xb)):,} in {time.perf_counter() - t0:.0f}s")
    return index, train_s, time.perf_counter() - t0


def auto_nlist(n: int) -> int:
    """Power of two nearest sqrt(n) (1024 at 1M)."""
    return 2 ** round(math.log2(math.sqrt(n)))


def run_flat(bench: Bench, xb: np.ndarray) -> Row:
    index, train_s, build_s = build("Flat", xb, None, 0)
    head = dict(index="Flat", factory="Flat", n=len(xb), param="exact", build_s=build_s,
                train_s=train_s, size_bytes=index_size(index))  # fmt: skip
    log(f"Flat n={len(xb):,}: built in {build_s:.1f}s, searching")
    row = measure(bench, index, head)
    log(f"  qps={row.qps_batched:.1f} p50={row.p50_ms_batch1:.2f}ms")
    return row


def run_ivf(bench: Bench, xb: np.ndarray, nlist: int, nprobes: list[int], seed: int) -> list[Row]:
    factory = f"IVF{nlist},Flat"
    rng = np.random.default_rng([seed, 3])
    sample = xb[np.sort(rng.choice(len(xb), size=min(len(xb), 64 * nlist), replace=False))]
    log(f"{factory} n={len(xb):,}: training on {len(sample):,}, adding")
    index, train_s, build_s = build(factory, xb, sample, 0)
    del sample
    size = index_size(index)
    log(f"  built in {build_s:.1f}s (train {train_s:.1f}s)")
    rows = []
    for nprobe in [p for p in nprobes if p <= nlist]:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
        head = dict(index="IVF", factory=factory, n=len(xb), param=f"nprobe={nprobe}",
                    build_s=build_s, train_s=train_s, size_bytes=size)  # fmt: skip
        rows.append(measure(bench, index, head))
        log(f"  nprobe={nprobe}: recall={rows[-1].recall_at_10:.3f} qps={rows[-1].qps_batched:.0f}")
    return rows


def run_hnsw(bench: Bench, xb: np.ndarray, m: int, ef_c: int, efs: list[int]) -> list[Row]:
    factory = f"HNSW{m}"
    log(f"{factory} n={len(xb):,}: building (efConstruction={ef_c})")
    index, train_s, build_s = build(factory, xb, None, ef_c)
    size = index_size(index)
    log(f"  built in {build_s:.1f}s")
    rows = []
    for ef in efs:
        index.hnsw.efSearch = ef
        head = dict(index="HNSW", factory=factory, n=len(xb), param=f"efSearch={ef}",
                    build_s=build_s, train_s=train_s, size_bytes=size,
                    extra={"efConstruction": ef_c})  # fmt: skip
        rows.append(measure(bench, index, head))
        log(f"  efSearch={ef}: recall={rows[-1].recall_at_10:.3f} qps={rows[-1].qps_batched:.0f}")
    return rows


def with_speedups(rows: list[Row]) -> list[Row]:
    """Fill speed-ups relative to the Flat row of the same N."""
    flat = {r.n: r for r in rows if r.index == "Flat"}
    for r in rows:
        r.speedup_batched = r.qps_batched / flat[r.n].qps_batched
        r.speedup_batch1 = flat[r.n].p50_ms_batch1 / r.p50_ms_batch1
    return rows


def hnsw_extrapolation(rows: list[Row], n: int) -> dict | None:
    """N log N extrapolation of the HNSW build time to ``n`` (an estimate, not a measure)."""
    h = next((r for r in rows if r.index == "HNSW"), None)
    if h is None or h.n >= n:
        return None
    factor = (n * math.log(n)) / (h.n * math.log(h.n))
    return {
        "kind": "ESTIMATE (extrapolated, not measured)",
        "from_n": h.n,
        "measured_build_s": h.build_s,
        "to_n": n,
        "estimated_build_s": h.build_s * factor,
        "model": "build time ∝ N log N",
    }


# --------------------------------------------------------------------------- report


def markdown(rows: list[Row]) -> str:
    lines = [
        "| N | index | param | build s | size MiB | recall@10 (text/image/both) | "
        "p50 ms, batch 1 | qps, batched | speed-up batched / batch 1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kinds = "/".join(f"{r.recall_by_kind[k]:.3f}" for k in QUERY_KINDS)
        lines.append(
            f"| {r.n:,} | {r.factory} | {r.param} | {r.build_s:.1f} | "
            f"{r.size_bytes / 2**20:,.0f} | {r.recall_at_10:.3f} ({kinds}) | "
            f"{r.p50_ms_batch1:.2f} | {r.qps_batched:,.0f} | "
            f"{r.speedup_batched:.1f}× / {r.speedup_batch1:.1f}× |"
        )
    return "\n".join(lines)


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "omp_max_threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "nice": os.nice(0),
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="catalogue size for Flat and IVF")
    p.add_argument("--dim", type=int, default=1024, help="text half + image half")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument(
        "--hnsw-n",
        type=int,
        default=None,
        help="catalogue size for HNSW (default --n; if smaller, Flat and IVF are rerun at it)",
    )
    p.add_argument("--nlist", type=int, default=0, help="IVF lists; 0 = power of two ~sqrt(N)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--subclusters", type=int, default=100, help="sub-clusters per category")
    p.add_argument("--single-budget", type=float, default=5.0, help="s of batch-1 timing per row")
    p.add_argument("--single-max", type=int, default=300, help="max batch-1 queries per row")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faiss.json")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def notes_for(args: argparse.Namespace) -> list[str]:
    notes = [f"Flat and IVF measured at N={args.n:,}."]
    if args.hnsw_n == args.n:
        notes.append(f"HNSW measured at the same N={args.n:,}.")
    else:
        notes.append(
            f"HNSW measured at N={args.hnsw_n:,} only (--hnsw-n); Flat and IVF were rerun at "
            f"N={args.hnsw_n:,} so HNSW recall and speed-ups compare with the same N."
        )
    return notes


def write_result(args: argparse.Namespace, rows: list[Row], gen_s: float, total_s: float) -> dict:
    """Write the JSON (called after each index, so partial runs keep their rows)."""
    result = {
        "benchmark": "faiss",
        "date": time.strftime("%Y-%m-%d"),
        "complete": total_s > 0,
        "machine": machine(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "generator": {
            "categories": N_CATEGORIES,
            "subclusters_per_category": args.subclusters,
            "sub_noise_norm": SUB_NOISE,
            "item_noise_norm": ITEM_NOISE,
            "noise_spectrum": "variance of coordinate k ∝ 1/(k+1)",
            "no_photo_share": NO_PHOTO_SHARE,
            "query_kinds": "interleaved thirds: text [t,0], image [0,i], both [t,i]/2",
        },
        "generation_s": gen_s,
        "total_s": total_s,
        "notes": notes_for(args),
        "hnsw_build_extrapolation": hnsw_extrapolation(rows, args.n),
        "rows": [asdict(r) for r in with_speedups(rows)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def main() -> None:
    args = parse_args()
    args.hnsw_n = args.hnsw_n or args.n
    t_start = time.perf_counter()
    cat = make_structure(args.dim, args.subclusters, args.seed)
    n_max = max(args.n, args.hnsw_n)
    log(f"generating {n_max:,} x {args.dim} vectors ({n_max * args.dim * 4 / 2**30:.1f} GiB)")
    t0 = time.perf_counter()
    xb_all = make_database(cat, n_max, args.seed)
    xq, kind = make_queries(cat, args.queries, args.seed)
    gen_s = time.perf_counter() - t0
    log(f"  generated in {gen_s:.1f}s")

    rows: list[Row] = []
    for n in sorted({args.n, args.hnsw_n}):  # small first: HNSW results early
        xb = xb_all[:n]
        bench = Bench(xq, kind, args.single_budget, args.single_max)
        rows.append(run_flat(bench, xb))
        write_result(args, rows, gen_s, 0.0)
        rows += run_ivf(bench, xb, args.nlist or auto_nlist(n), args.nprobe, args.seed)
        write_result(args, rows, gen_s, 0.0)
        if n == args.hnsw_n:
            rows += run_hnsw(bench, xb, args.hnsw_m, args.ef_construction, args.ef_search)
    result = write_result(args, rows, gen_s, time.perf_counter() - t_start)

    print()
    print(markdown(rows))
    print()
    for note in result["notes"]:
        print(f"- {note}")
    if e := result["hnsw_build_extrapolation"]:
        print(
            f"- HNSW build at N={e['to_n']:,}: ~{e['estimated_build_s'] / 60:.0f} min "
            f"(ESTIMATE, N log N from {e['measured_build_s']:.0f} s at N={e['from_n']:,})"
        )
    print(f"- total wall time {result['total_s'] / 60:.1f} min; results in {args.out}")


if __name__ == "__main__":
    main()
