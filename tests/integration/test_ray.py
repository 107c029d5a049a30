"""The Ray path (``compute.backend: ray``) on a real two-node Ray cluster on this machine.

One cluster for the module (a head and a second node, one CPU each, own temp dirs and
HOME; every process killed by PID afterwards), a few photos and texts: the clean and
embed stages and the index's neighbour lists computed on it equal the in-process path,
and fine-tuning a vision classifier with ``fit`` on two Ray Train workers (DDP) equals one
process.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from marketplace.compute.ray import runner
from marketplace.core.config import load_params
from marketplace.data.images import clean_export_images
from marketplace.data.labels import LabelMap
from marketplace.features.embedding import (
    EmbeddingSet,
    stream_catalogue_images,
    stream_catalogue_texts,
)
from marketplace.search.build import precompute_neighbours
from marketplace.training.distributed import fit_function
from marketplace.training.train import train_classifier
from tests.helpers import PROJECT_ROOT, ray_cluster
from tests.helpers.synthetic import colour_photos, image_spec, toy_index

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.ray]
PARAMS = load_params(PROJECT_ROOT / "params.yaml")
RAY = PARAMS.compute.model_copy(update={"backend": "ray", "batch_size": 3, "concurrency": 2})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with ray_cluster(tmp_path_factory.mktemp("ray")) as env:
        yield env


def _export(folder: Path, n: int) -> Path:
    """A tiny export: ``n`` photos of varied sizes, one image row without a file, one corrupt."""
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [",id,product_id,bucket_link,image_ref,create_time"]
    for i in range(n + 2):
        rows.append(f"{i},img{i:02d},p{i},link,ref,2022-02-26")
        if i == n:  # no file for this row
            continue
        if i == n + 1:
            (folder / "images" / f"img{i:02d}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
            continue
        size = (int(rng.integers(200, 700)), int(rng.integers(200, 700)))
        image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for x, y, r in rng.integers(20, 200, (4, 3)):
            draw.ellipse([x, y, x + r // 2, y + r // 3], fill=(int(x) % 256, 90, 200))
        image.save(folder / "images" / f"img{i:02d}.jpg", quality=90)
    (folder / "Images.csv").write_text("\n".join(rows) + "\n")
    return folder


def _stage(stage: str, args: list[str], tmp_path: Path, env: dict[str, str]) -> None:
    """A stage as DVC runs it (``python -m pipeline.<stage>``), against the cluster."""
    command = [sys.executable, "-m", f"pipeline.{stage}", *args, "--no-progress"]
    command += ["--metrics", str(tmp_path / f"{stage}.json"), "--params", str(tmp_path / "p.yaml")]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]


def test_clean_and_embed_stages_on_ray_equal_the_local_path(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    export = _export(tmp_path / "export", 7)
    listings = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in (3, 1, 4, 1, 5, 9, 2, 6)],
            "title": ["oak table", "ps4", "sofa", "ps4", "bike", "drill", "lamp", "tent"],
            "description": ["solid oak", "two pads", "", "", "road", "cordless", "led", "2 man"],
        }
    )
    listings.to_parquet(tmp_path / "listings.parquet")
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["compute"] = RAY.model_dump()
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    canvases, report = tmp_path / "canvases", tmp_path / "report.csv"
    _stage("clean_images", ["--data", str(export), "--out", str(canvases), "--report",
                            str(report)], tmp_path, cluster)  # fmt: skip
    out = {stage: tmp_path / f"{stage}.npz" for stage in ("embed_images", "embed_text")}
    _stage("embed_images", ["--images", str(canvases), "--out", str(out["embed_images"])],
           tmp_path, cluster)  # fmt: skip
    _stage("embed_text", ["--listings", str(tmp_path / "listings.parquet"), "--out",
                          str(out["embed_text"])], tmp_path, cluster)  # fmt: skip

    local_canvases = tmp_path / "local"
    local_report, _ = clean_export_images(export, local_canvases, size=512, jpeg_quality=90,
                                          workers=1, progress=False)  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_csv(report, keep_default_na=False),
                                  pd.read_csv(io.StringIO(local_report.to_csv(index=False)),
                                              keep_default_na=False))  # fmt: skip
    assert sorted(p.name for p in canvases.glob("*.jpg")) == [f"img{i:02d}.jpg" for i in range(7)]
    for path in canvases.glob("*.jpg"):  # the same canvases, to the byte
        assert path.read_bytes() == (local_canvases / path.name).read_bytes()
    manifest = "manifest.json"  # what the next incremental run reuses: the same either way
    assert json.loads((canvases / manifest).read_text()) == json.loads(
        (local_canvases / manifest).read_text()
    )
    local = {
        "embed_images": stream_catalogue_images(
            canvases, PARAMS.embed_images, canvas_size=PARAMS.clean_images.size, progress=False
        ).collect(),
        "embed_text": stream_catalogue_texts(listings, PARAMS.embed_text, progress=False).collect(),
    }
    for stage, expected in local.items():
        got = EmbeddingSet.load(out[stage])
        assert got.ids.tolist() == expected.ids.tolist()  # same ids, same order
        assert got.spec == expected.spec
        np.testing.assert_allclose(got.vectors, expected.vectors, atol=1e-4, rtol=0)


def test_neighbour_lists_in_shards_on_ray_equal_the_local_ones(
    cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in cluster.items():
        monkeypatch.setenv(key, value)
    index = toy_index("IVF4,Flat", n=40)
    local = precompute_neighbours(index, 5)
    remote = precompute_neighbours(index, 5, runner(RAY.model_copy(update={"batch_size": 7})))
    assert remote.meta == local.meta
    for position in range(len(index)):  # the same lists; near-ties may swap (float noise)
        got, want = remote.neighbours(position, 5), local.neighbours(position, 5)
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
        cut = want[-1][1] + 1e-5
        assert {p for p, s in got if s > cut} == {p for p, s in want if s > cut}


def test_vision_finetuning_on_ray_equals_one_process(
    cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``train_classifier`` with the fit function of ``compute.backend: ray`` (``fit`` on two
    Ray Train workers, DDP) fine-tunes to the weights and metrics of the in-process run, up
    to float noise: augmentation on (keyed by photo, so worker-independent), batches of 3
    (unequal shares of 2 workers), dropout 0 (each worker draws its own masks)."""
    for key, value in cluster.items():
        monkeypatch.setenv(key, value)
    ids, labels = colour_photos(tmp_path / "images", 12)
    listings = pd.DataFrame(
        {
            "product_id": [f"p{i:02d}" for i in range(12)],
            "image_id": ids,
            "label": labels.numpy(),
            "title": ["t"] * 12,
            "description": ["d"] * 12,
            "price": [1.0] * 12,
        }
    )
    vectors = np.random.default_rng(0).normal(size=(12, 1280)).astype(np.float32)
    images = EmbeddingSet(np.array(ids), vectors, image_spec())
    products = listings["product_id"].tolist()
    splits = {"train": products[:8], "val": products[8:10], "test": products[10:]}
    vision = PARAMS.train.vision.model_copy(
        update={
            "dropout": 0.0,
            "hidden_dim": 16,
            "epochs": 3,
            "finetune_blocks": 1,
            "finetune_lr": 0.003,
            "finetune_epochs": 2,
            "finetune_patience": 2,
            "finetune_batch_size": 3,
            "augment": True,
        }
    )
    params = PARAMS.train.model_copy(update={"vision": vision})
    runs = {}
    for backend in ("local", "ray"):
        epochs: list[dict[str, float]] = []
        trained = train_classifier(
            "vision",
            listings,
            splits,
            LabelMap(("Blue", "Red")),
            params,
            images=images,
            images_dir=tmp_path / "images",
            on_epoch=epochs.append,
            fit_function=fit_function(RAY.model_copy(update={"backend": backend})),
        )
        runs[backend] = trained, epochs
    (local, local_epochs), (remote, remote_epochs) = runs["local"], runs["ray"]
    assert local.metrics["finetune_best_epoch"] > 0  # fine-tuned weights kept, not the start
    assert remote.metrics.keys() == local.metrics.keys()
    assert remote.metrics == pytest.approx(local.metrics, abs=1e-4)
    assert len(remote.history) == len(local.history) == len(local_epochs)
    for got, want in zip(remote.history + remote_epochs, local.history + local_epochs, strict=True):
        assert got == pytest.approx(want, abs=1e-4)  # the epochs replayed to MLflow too
    tensors = local.package.encoder_tensors
    assert tensors and remote.package.encoder_tensors.keys() == tensors.keys()
    for name, tensor in tensors.items():
        got = remote.package.encoder_tensors[name]
        torch.testing.assert_close(got, tensor, atol=1e-5, rtol=1e-4)
    for name, tensor in local.package.head.state_dict().items():
        got = remote.package.head.state_dict()[name]
        torch.testing.assert_close(got, tensor, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(remote.test_probabilities, local.test_probabilities, atol=1e-5)
