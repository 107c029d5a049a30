"""The Ray path (``compute.backend: ray``) on a real two-node Ray cluster on this machine.

One cluster for the module (a head and a second node, one CPU each, own temp dirs and
HOME; every process killed by PID afterwards), a few photos and texts: the embed stages
and the index's neighbour lists computed on it equal the in-process path.
"""

from __future__ import annotations

import functools
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

from marketplace.config import load_params
from marketplace.models.embedding import EmbeddingSet, embed_catalogue_images, embed_catalogue_texts
from marketplace.ray_compute import runner
from marketplace.training.distributed import fit_data_parallel
from marketplace.training.loop import FitConfig, fit
from tests.helpers import PROJECT_ROOT, ray_cluster
from tests.unit.test_index import _index

pytestmark = pytest.mark.integration
PARAMS = load_params(PROJECT_ROOT / "params.yaml")
RAY = PARAMS.compute.model_copy(update={"backend": "ray", "batch_size": 3, "concurrency": 2})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with ray_cluster(tmp_path_factory.mktemp("ray")) as env:
        yield env


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = Image.new("RGB", (512, 512), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for x, y, size in rng.integers(20, 400, (4, 3)):
            draw.ellipse([x, y, x + size // 3, y + size // 4], fill=(int(x) % 256, 90, 200))
        image.save(folder / f"img{i:02d}.jpg", quality=90)
    return folder


def test_embed_stages_on_ray_equal_the_local_path(cluster: dict[str, str], tmp_path: Path) -> None:
    photos = _photos(tmp_path / "images", 7)
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
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage, args in [
        ("embed_images", ["--images", str(photos)]),
        ("embed_text", ["--listings", str(tmp_path / "listings.parquet")]),
    ]:  # the stages themselves, as DVC runs them, against the cluster
        out = tmp_path / f"{stage}.npz"
        command = [sys.executable, "-m", f"pipeline.{stage}", *args, "--out", str(out)]
        command += ["--metrics", str(tmp_path / f"{stage}.json"), "--no-progress"]
        command += ["--params", str(tmp_path / "params.yaml")]
        done = subprocess.run(command, cwd=PROJECT_ROOT, env=cluster, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
    local = {
        "embed_images": embed_catalogue_images(
            photos, PARAMS.embed_images, canvas_size=PARAMS.clean_images.size, progress=False
        ),
        "embed_text": embed_catalogue_texts(listings, PARAMS.embed_text, progress=False),
    }
    for stage, expected in local.items():
        got = EmbeddingSet.load(tmp_path / f"{stage}.npz")
        assert got.ids.tolist() == expected.ids.tolist()  # same ids, same order
        assert got.spec == expected.spec
        np.testing.assert_allclose(got.vectors, expected.vectors, atol=1e-4, rtol=0)


def test_neighbour_lists_in_shards_on_ray_equal_the_local_ones(
    cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in cluster.items():
        monkeypatch.setenv(key, value)
    index = _index("IVF4,Flat", n=40)
    local = index.precompute_neighbours(5)
    remote = index.precompute_neighbours(5, runner(RAY.model_copy(update={"batch_size": 7})))
    assert remote.meta == local.meta
    for position in range(len(index)):
        assert remote.neighbours(position, 5) == local.neighbours(position, 5)


def test_fit_on_two_ray_train_workers_equals_one_process(
    cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in cluster.items():
        monkeypatch.setenv(key, value)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(160, 8)).astype(np.float32))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    train, val = ([x[:128]], y[:128]), ([x[128:]], y[128:])
    config = FitConfig(lr=0.05, weight_decay=0.0, epochs=2, patience=2, batch_size=32, seed=0)
    make_model = functools.partial(torch.nn.Linear, 8, 3)
    torch.manual_seed(config.seed)
    alone = make_model()
    expected = fit(alone, train, val, config)
    state, result = fit_data_parallel(make_model, train, val, config, RAY, tmp_path / "train")
    assert [r["val_accuracy"] for r in result.history] == [
        r["val_accuracy"] for r in expected.history
    ]
    for name, tensor in alone.state_dict().items():
        torch.testing.assert_close(state[name], tensor, atol=1e-5, rtol=1e-4)
