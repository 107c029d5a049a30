"""The four heavy stages are incremental and their outputs equal a cold build's.

A small synthetic export is built, then a changed one (products added and deleted, a title
edited, a photo replaced) is built on top of it with each stage's previous outputs in place
(as ``dvc repro`` leaves ``persist: true`` outs); a cold build of the changed export goes to
another folder. Every out must be the same (ids and order identical, vectors within 1e-6,
files byte-identical), the metrics must count what was reused and computed, and a change of
params must recompute everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from marketplace.core.config import load_params
from marketplace.data.delta import read_export, subset_export, write_export
from marketplace.data.sample import generate_sample
from marketplace.features.embedding import image_spec, reusable_vectors
from pipeline import clean_images, clean_tabular, embed_images, embed_text, thumbnails
from tests.helpers import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ADDED, DELETED = 8, 3


def build(data: Path, out: Path, params: Path, *, cold: bool = False) -> dict[str, dict]:
    """The four heavy stages (and clean_tabular, which two of them read) into ``out``."""
    flag = ["--cold"] if cold else []
    listings = out / "listings.parquet"
    assert (
        clean_tabular.main(
            [
                "--data",
                str(data),
                "--listings",
                str(listings),
                "--params",
                str(params),
                "--label-map",
                str(out / "label_map.json"),
                "--metrics",
                str(out / "m/tabular.json"),
                "--issues",
                str(out / "r/tabular.csv"),
            ]
        )
        == 0
    )
    steps = {
        "clean_images": (
            clean_images,
            [
                "--data",
                str(data),
                "--out",
                str(out / "images"),
                "--report",
                str(out / "r/images.csv"),
                "--no-progress",
            ],
        ),
        "embed_images": (
            embed_images,
            ["--images", str(out / "images"), "--out", str(out / "images.npz"), "--no-progress"],
        ),
        "embed_text": (
            embed_text,
            ["--listings", str(listings), "--out", str(out / "text.npz"), "--no-progress"],
        ),
        "thumbnails": (
            thumbnails,
            [
                "--listings",
                str(listings),
                "--images",
                str(out / "images"),
                "--out",
                str(out / "thumbnails"),
            ],
        ),
    }
    metrics = {}
    for name, (stage, args) in steps.items():
        path = out / "m" / f"{name}.json"
        assert stage.main([*args, "--params", str(params), "--metrics", str(path), *flag]) == 0
        metrics[name] = json.loads(path.read_text())
    return metrics


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("incremental")
    generate_sample(root / "full", seed=0, per_category=2)
    ids = [p["id"].strip() for p in read_export(root / "full").products]
    subset_export(root / "full", root / "old", ids[:-ADDED])
    subset_export(root / "full", root / "new", ids[DELETED:])
    new = read_export(root / "new")  # one title edited, one photo replaced
    edited = new.products[0]["id"]
    new.products[0]["product_name"] = "An edited title | in Leeds, West Yorkshire | Gumtree"
    photos = new.photo_files()
    replaced = next(i["id"] for i in new.images if i["id"] in photos)
    with Image.open(photos[replaced]) as image:
        flipped = image.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    flipped.save(root / "flipped.jpg", "JPEG", quality=90)
    kept = {i: p for i, p in photos.items() if i != replaced}
    write_export(
        root / "new",
        new.products,
        new.images,
        {**kept, replaced: (".jpg", (root / "flipped.jpg").read_bytes())},
    )
    params = root / "params.yaml"
    params.write_text((PROJECT_ROOT / "params.yaml").read_text())
    build(root / "old", root / "inc", params)
    old_manifest = json.loads((root / "inc/images/manifest.json").read_text())["images"]
    metrics = build(root / "new", root / "inc", params)
    build(root / "new", root / "cold", params, cold=True)
    return {
        "root": root,
        "metrics": metrics,
        "old_manifest": old_manifest,
        "replaced": replaced,
        "edited": edited,
        "params": params,
        "ids": ids,
    }


def test_incremental_outputs_equal_a_cold_build(built: dict) -> None:
    inc, cold = built["root"] / "inc", built["root"] / "cold"
    assert files(inc / "images") == files(cold / "images")  # canvases and manifest
    assert files(inc / "thumbnails") == files(cold / "thumbnails")
    for name in ("images.npz", "text.npz"):
        with np.load(inc / name) as a, np.load(cold / name) as b:
            assert a["ids"].tolist() == b["ids"].tolist()
            assert a["keys"].tolist() == b["keys"].tolist()
            assert str(a["spec"]) == str(b["spec"])
            np.testing.assert_allclose(a["vectors"], b["vectors"], rtol=0, atol=1e-6)


def test_only_new_or_changed_inputs_are_computed(built: dict) -> None:
    metrics, old = built["metrics"], built["old_manifest"]
    new_manifest = json.loads((built["root"] / "inc/images/manifest.json").read_text())["images"]
    unchanged = {i for i in new_manifest if i in old and i != built["replaced"]}
    assert unchanged and built["replaced"] in new_manifest
    assert metrics["clean_images"]["reused"] == len(unchanged)
    assert metrics["clean_images"]["computed"] == (
        metrics["clean_images"]["unique_ids"] - len(unchanged)
    )
    assert metrics["embed_images"]["reused"] == len(unchanged)
    assert metrics["embed_images"]["computed"] == len(new_manifest) - len(unchanged)
    # texts: the added products and the edited title
    assert metrics["embed_text"]["computed"] == ADDED + 1
    assert metrics["embed_text"]["reused"] == metrics["embed_text"]["products"] - ADDED - 1
    assert 0 < metrics["thumbnails"]["computed"] <= ADDED + 1
    assert metrics["thumbnails"]["reused"] > 0


def test_a_change_of_params_recomputes_everything(built: dict) -> None:
    root, params_file = built["root"], built["root"] / "params-256.yaml"
    params = yaml.safe_load(built["params"].read_text())
    params["clean_images"]["size"] = 256
    params["embed_text"]["max_tokens"] = 64
    params["index"]["thumbnail_size"] = 96
    params_file.write_text(yaml.safe_dump(params))
    metrics = build(root / "new", root / "inc", params_file)
    for stage in ("clean_images", "embed_images", "embed_text", "thumbnails"):
        assert metrics[stage]["reused"] == 0, stage
        assert metrics[stage]["computed"] > 0, stage
    # another encoder: the spec differs, so not one row of the file is reusable
    lite0 = load_params(params_file).embed_images.model_copy(
        update={"encoder": "efficientnet_lite0", "image_size": 224}
    )
    spec = image_spec(lite0, 256)
    assert reusable_vectors(root / "inc/images.npz", lambda old: old == spec) is None
    assert reusable_vectors(root / "inc/images.npz", lambda old: True) is not None
