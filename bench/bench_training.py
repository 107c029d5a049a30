"""Benchmark the training half of the pipeline on the real export.

1. Image encoder throughput (img/s) on real cleaned photos for eager fp32, channels_last,
   bf16 autocast and both, side by side in one run, plus the text encoder (texts/s).
2. A cold ``dvc repro`` of the whole pipeline on the real export in a scratch project
   (import, cleaning, embedding, baselines, the three classifiers), with per-stage times,
   and the test-split figures of each model.
3. Reruns after a head-only param change (``train.combined.lr``), seven of them, and
   their median as a share of the cold build (the target: <= 0.1x).

Run by hand (``make bench``); writes ``bench/results/training.json`` and prints Markdown.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marketplace.core.config import load_params  # noqa: E402
from marketplace.data.images import clean_image  # noqa: E402
from marketplace.features.embedding import inference_context  # noqa: E402
from marketplace.features.encoders import ImageEncoder, TextEncoder, image_backbone  # noqa: E402
from marketplace.features.preprocessing import ImagePreprocessing  # noqa: E402
from tests.helpers import make_project_copy, run  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_living import cpu_name  # noqa: E402

# of train.combined.lr, one rerun each: seven values the run cache has not seen, so that
# the median is not at the mercy of one rerun's early-stopping epoch count
RERUN_LR_FACTORS = (0.84, 0.92, 0.96, 1.04, 1.08, 1.16, 1.24)
STAGE_LINE = re.compile(r"^Running stage '(?P<stage>[a-z_]+)'", re.MULTILINE)


def encoder_throughput(export: Path, n_images: int, batch_size: int) -> list[dict]:
    """img/s of the default image encoder in four execution modes, same inputs."""
    params = load_params(ROOT / "params.yaml")
    backbone = image_backbone(params.embed_images.encoder)
    prep = ImagePreprocessing(
        params.clean_images.size, params.embed_images.image_size, backbone.mean, backbone.std
    )
    files = sorted((export / "images").glob("*.jpg"))[:n_images]
    pixels = torch.stack(
        [prep.from_canvas(clean_image(f.read_bytes(), prep.canvas_size)) for f in files]
    )
    encoder = ImageEncoder(params.embed_images.encoder).eval()
    reference = None
    rows = []
    for channels_last in (False, True):
        for bf16 in (False, True):
            encoder.to(
                memory_format=torch.channels_last if channels_last else torch.contiguous_format
            )
            x = pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels
            with torch.inference_mode(), inference_context(bf16):
                encoder(x[:batch_size])  # warm-up
                started = time.perf_counter()
                out = torch.cat(
                    [encoder(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)]
                )
                seconds = time.perf_counter() - started
            if reference is None:
                reference = out
            cosine = torch.nn.functional.cosine_similarity(out, reference).min().item()
            rows.append(
                {
                    "channels_last": channels_last,
                    "bf16": bf16,
                    "images_per_s": round(len(x) / seconds, 1),
                    "min_cosine_vs_fp32": round(cosine, 4),
                }
            )
    return rows


def text_throughput(export: Path, n_texts: int) -> dict:
    import pandas as pd

    params = load_params(ROOT / "params.yaml").embed_text
    products = pd.read_csv(export / "Products.csv", lineterminator="\n", dtype=str)
    texts = [
        f"{a}. {b}"
        for a, b in zip(
            products["product_name"][:n_texts],
            products["product_description"][:n_texts],
            strict=True,
        )
    ]
    encoder = TextEncoder(params.encoder, max_tokens=params.max_tokens).eval()
    result = {}
    for bf16 in (False, True):
        with torch.inference_mode(), inference_context(bf16):
            started = time.perf_counter()
            for i in range(0, len(texts), params.batch_size):
                encoder.encode(texts[i : i + params.batch_size])
            result["bf16" if bf16 else "fp32"] = round(
                len(texts) / (time.perf_counter() - started), 1
            )
    return result


def timed_repro(project: Path) -> tuple[float, list[str], str]:
    started = time.perf_counter()
    result = run(["dvc", "repro"], project)  # the copy's own code: see pipeline()
    return time.perf_counter() - started, STAGE_LINE.findall(result.stdout), result.stdout


def pipeline(export: Path, scratch: Path) -> dict:
    project = make_project_copy(scratch / "project")
    # The stages import the copy's code, not this work tree's (an edit made while the
    # benchmark runs would otherwise change what the later stages run).
    os.environ["PYTHONPATH"] = os.pathsep.join([str(project / "src"), str(project)])
    run([sys.executable, "-m", "marketplace.data.ingest", "--from", str(export)], project)
    cold, stages, log = timed_repro(project)
    (project / "repro.log").write_text(log)
    models = {
        kind: json.loads((project / f"metrics/train_{kind}.json").read_text())
        for kind in ("vision", "text", "combined")
    }
    baselines = json.loads((project / "metrics/baselines.json").read_text())
    index = json.loads((project / "metrics/index.json").read_text())
    # Head-only reruns, each with an lr the run cache has not seen: one timing is at the
    # mercy of the machine's noise, so take several and report them all with the median.
    params = project / "params.yaml"
    original = yaml.safe_load(params.read_text())
    reruns, rerun_stages = [], []
    for factor in RERUN_LR_FACTORS:
        changed = copy.deepcopy(original)
        changed["train"]["combined"]["lr"] *= factor
        params.write_text(yaml.safe_dump(changed))
        seconds, rerun_stages, _ = timed_repro(project)
        reruns.append(round(seconds, 1))
    return {
        "cold_repro_s": round(cold, 1),
        "stages": stages,
        "models": models,
        "baselines": baselines,
        "index": index,
        "head_only_rerun_s": reruns,
        "head_only_rerun_median_s": statistics.median(reruns),
        "head_only_rerun_ratio": round(statistics.median(reruns) / cold, 4),
        "head_only_rerun_stages": rerun_stages,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/marketplace")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/training.json")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument(
        "--batch-size", type=int, default=0, help="image batch (0: embed_images.batch_size)"
    )
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-encoders", action="store_true", help="the pipeline only")
    args = parser.parse_args()
    if not (args.data / "Products.csv").is_file():
        print(f"skipped: real export not found at {args.data}", file=sys.stderr)
        return 0
    torch.set_num_threads(torch.get_num_threads())
    embed = load_params(ROOT / "params.yaml").embed_images
    batch_size = args.batch_size or embed.batch_size
    result: dict = {"cpu": cpu_name()}
    if not args.skip_encoders:
        result |= {
            "image_encoder_setup": {
                "encoder": embed.encoder,
                "image_size": embed.image_size,
                "batch_size": batch_size,
                "images": args.images,
            },
            "image_encoder": encoder_throughput(args.data, args.images, batch_size),
            "text_encoder_texts_per_s": text_throughput(args.data, 512),
        }
    if not args.skip_pipeline:
        with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
            result["pipeline"] = pipeline(args.data, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
