"""Write the built-in synthetic marketplace export: ``python -m pipeline.sample``.

A thin command line around :func:`sample.generate_sample`, so demos and CI
can create the raw export the pipeline starts from without the real data.

    python -m pipeline.sample [--out data] [--seed 0] [--per-category 100] [--force]

Without ``--force`` an existing non-empty output directory is an error (exit code 2). With
``--force`` the new export is generated next to it first and only then swapped in, so a failed
run never leaves the old export half-deleted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from marketplace.data.schema import IMAGES_DIR, IMAGES_FILE, PRODUCTS_FILE
from marketplace.io import replace_dir
from sample import SampleFaults, generate_sample


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.sample",
        description="Generate the deterministic synthetic raw marketplace export.",
    )
    parser.add_argument("--out", type=Path, default=Path("data"), help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (same seed, same bytes)")
    parser.add_argument(
        "--per-category", type=int, default=100, help="products per root category (>= 1)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing non-empty output directory"
    )
    args = parser.parse_args(argv)
    if args.per_category < 1:
        parser.error("--per-category must be at least 1")
    return args


def _generate_replacing(out: Path, *, seed: int, per_category: int) -> SampleFaults:
    """Generate into a fresh sibling directory, then swap it with ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        faults = generate_sample(staging / "export", seed=seed, per_category=per_category)
        replace_dir(staging / "export", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return faults


def _count_records(csv_path: Path) -> int:
    """Records in one of our CSVs: lines ending in "\\n", less the header.

    Bare "\\r" inside descriptions never ends a record, and the generator writes no "\\n"
    inside fields, so counting "\\n" is exact here (and avoids importing pandas again).
    """
    with csv_path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = _parse_args(argv)
    out: Path = args.out
    try:
        if args.force:
            faults = _generate_replacing(out, seed=args.seed, per_category=args.per_category)
        else:
            faults = generate_sample(out, seed=args.seed, per_category=args.per_category)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    n_products = _count_records(out / PRODUCTS_FILE)
    n_image_rows = _count_records(out / IMAGES_FILE)
    n_files = sum(1 for p in (out / IMAGES_DIR).iterdir() if p.is_file())
    print(
        f"wrote {out}: {n_products} products, {n_image_rows} image rows, {n_files} image files; "
        f"faults: {len(faults.bad_price_product_ids)} bad prices, "
        f"{len(faults.duplicate_product_ids)} duplicate id, "
        f"{len(faults.missing_file_image_ids)} missing files, "
        f"{len(faults.truncated_image_ids)} truncated, "
        f"{len(faults.not_an_image_ids)} not an image, "
        f"{len(faults.orphan_image_ids)} orphan image row "
        f"({len(faults.mislabelled_product_ids)} mislabelled products)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
