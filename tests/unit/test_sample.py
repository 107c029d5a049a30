"""The synthetic sample export: format, determinism, deliberate faults and the CLI.

CI and demos run the whole pipeline on this data, so it must look exactly like the real
export (format) and carry every fault the cleaning stages are expected to report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import uuid
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError

from marketplace.data import sample as sample_cli
from marketplace.data.sample import SampleFaults, generate_sample
from marketplace.data.schema import (
    CATEGORY_SEPARATOR,
    IMAGE_COLUMNS,
    IMAGE_EXTENSIONS,
    IMAGES_DIR,
    IMAGES_FILE,
    PRODUCT_COLUMNS,
    PRODUCTS_FILE,
    ROOT_CATEGORIES,
)

PER_CATEGORY = 4
PRICE_RE = re.compile(r"^£[\d,]+\.\d\d$")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleFaults]:
    out = tmp_path_factory.mktemp("sample") / "export"
    faults = generate_sample(out, seed=0, per_category=PER_CATEGORY)
    return out, faults


@pytest.fixture(scope="module")
def products(sample: tuple[Path, SampleFaults]) -> pd.DataFrame:
    return pd.read_csv(sample[0] / PRODUCTS_FILE, lineterminator="\n", dtype=str)


@pytest.fixture(scope="module")
def images(sample: tuple[Path, SampleFaults]) -> pd.DataFrame:
    return pd.read_csv(sample[0] / IMAGES_FILE, lineterminator="\n", dtype=str)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _image_file(out: Path, image_id: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        path = out / IMAGES_DIR / f"{image_id}{ext}"
        if path.exists():
            return path
    return None


# ------------------------------------------------------------------------------ determinism


def test_same_seed_gives_byte_identical_tree(tmp_path: Path) -> None:
    faults_a = generate_sample(tmp_path / "a", seed=7, per_category=3)
    faults_b = generate_sample(tmp_path / "b", seed=7, per_category=3)
    digest_a = _tree_digest(tmp_path / "a")
    assert digest_a == _tree_digest(tmp_path / "b")
    assert faults_a == faults_b
    assert {PRODUCTS_FILE, IMAGES_FILE} <= set(digest_a)


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    generate_sample(tmp_path / "a", seed=1, per_category=3)
    generate_sample(tmp_path / "b", seed=2, per_category=3)
    a, b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert a[PRODUCTS_FILE] != b[PRODUCTS_FILE]
    assert a[IMAGES_FILE] != b[IMAGES_FILE]
    assert set(a) != set(b)  # image ids differ too


def test_no_temporary_directories_left_behind(sample: tuple[Path, SampleFaults]) -> None:
    out = sample[0]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert sorted(p.name for p in out.iterdir()) == sorted([PRODUCTS_FILE, IMAGES_FILE, IMAGES_DIR])


# ----------------------------------------------------------------------------------- format


def test_products_csv_format(sample: tuple[Path, SampleFaults], products: pd.DataFrame) -> None:
    raw = (sample[0] / PRODUCTS_FILE).read_bytes()
    assert raw.startswith(b",id,product_name,category,product_description,price,location\n")
    assert raw.endswith(b"\n")
    assert b"\r\n" not in raw
    # One duplicated row on top of per_category products per root.
    assert len(products) == PER_CATEGORY * len(ROOT_CATEGORIES) + 1
    assert list(products.columns) == ["Unnamed: 0", *PRODUCT_COLUMNS]
    assert products["Unnamed: 0"].astype(int).tolist() == list(range(len(products)))
    for product_id in products["id"]:
        assert uuid.UUID(product_id).version == 4


def test_some_descriptions_hold_bare_carriage_returns(
    sample: tuple[Path, SampleFaults], products: pd.DataFrame
) -> None:
    with_cr = products["product_description"].str.contains("\r", regex=False)
    assert with_cr.sum() >= 3
    assert not products["product_description"].str.contains("\r\n", regex=False).any()
    # This is why readers must split records on "\n" only: csv without that breaks rows.
    text = (sample[0] / PRODUCTS_FILE).read_text(encoding="utf-8")
    naive_rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(naive_rows) > len(products) + 1


def test_images_csv_format(sample: tuple[Path, SampleFaults], images: pd.DataFrame) -> None:
    raw = (sample[0] / IMAGES_FILE).read_bytes()
    assert raw.startswith(b",id,product_id,bucket_link,image_ref,create_time\n")
    assert list(images.columns) == ["Unnamed: 0", *IMAGE_COLUMNS]
    assert images["Unnamed: 0"].astype(int).tolist() == list(range(len(images)))
    assert images["id"].is_unique
    bucket = "https://aicore-projects-datasets-prod.s3.eu-west-1.amazonaws.com/MetaMarketplaceMLEng/images/"
    assert (images["bucket_link"] == bucket + images["id"] + ".jpg").all()
    assert images["image_ref"].str.fullmatch(r"[A-Za-z0-9]{16}").all()
    assert set(images["create_time"]) <= {"2022-02-26", "2022-02-27", "2022-02-28"}
    for image_id in images["id"]:
        assert uuid.UUID(image_id).version == 4


def test_products_look_like_gumtree_listings(
    sample: tuple[Path, SampleFaults], products: pd.DataFrame
) -> None:
    roots = products["category"].str.split(CATEGORY_SEPARATOR, regex=False).str[0]
    assert set(roots) == set(ROOT_CATEGORIES)
    depth = products["category"].str.count(re.escape(CATEGORY_SEPARATOR))
    assert depth.between(1, 3).all()
    assert (products["product_name"].str.endswith(" | Gumtree")).all()
    for name, location in zip(products["product_name"], products["location"], strict=True):
        assert name.endswith(f" | in {location} | Gumtree")
    bad = set(sample[1].bad_price_product_ids)
    prices = products["price"].fillna("")
    good = prices.str.match(PRICE_RE)
    assert set(products.loc[~good, "id"]) == bad
    assert good[~products["id"].isin(bad)].all()


def test_images_per_product(products: pd.DataFrame, images: pd.DataFrame) -> None:
    per_product = images.groupby("product_id").size().reindex(products["id"].unique())
    assert per_product.fillna(0).mean() > 1.2


# ----------------------------------------------------------------------------------- faults


def test_fault_counts(sample: tuple[Path, SampleFaults]) -> None:
    faults = sample[1]
    assert len(faults.bad_price_product_ids) == 5
    assert len(faults.duplicate_product_ids) == 1
    assert len(faults.missing_file_image_ids) == 5
    assert len(faults.truncated_image_ids) == 1
    assert len(faults.not_an_image_ids) == 1
    assert len(faults.orphan_image_ids) == 1
    assert len(faults.mislabelled_product_ids) >= 1
    image_faults = [
        *faults.missing_file_image_ids,
        *faults.truncated_image_ids,
        *faults.not_an_image_ids,
        *faults.orphan_image_ids,
    ]
    assert len(set(image_faults)) == len(image_faults)


def test_bad_prices_are_unparseable(
    sample: tuple[Path, SampleFaults], products: pd.DataFrame
) -> None:
    bad = products[products["id"].isin(sample[1].bad_price_product_ids)]
    assert len(bad) == 5
    assert not bad["price"].fillna("").str.match(PRICE_RE).any()
    assert bad["price"].isna().sum() == 1  # the empty field


def test_duplicate_product_id_appears_twice(
    sample: tuple[Path, SampleFaults], products: pd.DataFrame
) -> None:
    (dup_id,) = sample[1].duplicate_product_ids
    rows = products[products["id"] == dup_id]
    assert len(rows) == 2
    assert rows.index[0] < rows.index[1]
    first, second = rows.iloc[0], rows.iloc[1]
    assert (first["product_name"], first["product_description"]) != (
        second["product_name"],
        second["product_description"],
    )
    assert products["id"].duplicated().sum() == 1


def test_missing_image_files_are_absent(
    sample: tuple[Path, SampleFaults], images: pd.DataFrame
) -> None:
    out, faults = sample
    assert set(faults.missing_file_image_ids) <= set(images["id"])
    for image_id in faults.missing_file_image_ids:
        assert _image_file(out, image_id) is None
    # ... and every other image row has its file, with no unlisted files.
    on_disk = {p.stem for p in (out / IMAGES_DIR).iterdir()}
    assert on_disk == set(images["id"]) - set(faults.missing_file_image_ids)


def test_truncated_image_fails_to_load(sample: tuple[Path, SampleFaults]) -> None:
    out, faults = sample
    (image_id,) = faults.truncated_image_ids
    path = _image_file(out, image_id)
    assert path is not None and path.suffix == ".jpg"
    with pytest.raises(OSError), Image.open(path) as img:
        img.load()


def test_not_an_image_is_text(sample: tuple[Path, SampleFaults]) -> None:
    out, faults = sample
    (image_id,) = faults.not_an_image_ids
    path = out / IMAGES_DIR / f"{image_id}.jpg"
    path.read_text(encoding="ascii")  # plain text
    with pytest.raises(UnidentifiedImageError):
        Image.open(path)


def test_orphan_image_row(
    sample: tuple[Path, SampleFaults], products: pd.DataFrame, images: pd.DataFrame
) -> None:
    (image_id,) = sample[1].orphan_image_ids
    orphans = images[~images["product_id"].isin(products["id"])]
    assert orphans["id"].tolist() == [image_id]
    path = _image_file(sample[0], image_id)
    assert path is not None  # its file is fine; only the product link is broken
    with Image.open(path) as img:
        img.load()


def test_mislabelled_ids_are_products(
    sample: tuple[Path, SampleFaults], products: pd.DataFrame
) -> None:
    assert set(sample[1].mislabelled_product_ids) <= set(products["id"])


# ----------------------------------------------------------------------------- image variety


def test_image_variety(sample: tuple[Path, SampleFaults]) -> None:
    out, faults = sample
    broken = {*faults.truncated_image_ids, *faults.not_an_image_ids}
    kinds: dict[str, int] = {"L": 0, "CMYK": 0, "RGBA_PNG": 0, "EXIF": 0, "RGB": 0}
    widths, heights = set(), set()
    for path in sorted((out / IMAGES_DIR).iterdir()):
        if path.stem in broken:
            continue
        with Image.open(path) as img:
            img.load()
            widths.add(img.width)
            heights.add(img.height)
            orientation = img.getexif().get(0x0112, 1)
            if img.format == "PNG":
                assert path.suffix == ".png"
                assert img.mode == "RGBA"
                alpha = img.getchannel("A").getextrema()
                assert alpha == (0, 255)  # real transparency
                kinds["RGBA_PNG"] += 1
                continue
            assert img.format == "JPEG" and path.suffix == ".jpg"
            if orientation != 1:
                kinds["EXIF"] += 1
                upright = ImageOps.exif_transpose(img)
                if orientation in (6, 8):
                    assert upright.size == (img.height, img.width)
            elif img.mode in kinds:
                kinds[img.mode] += 1
    assert kinds["RGBA_PNG"] == 1
    assert kinds["L"] >= 1 and kinds["CMYK"] >= 1 and kinds["EXIF"] >= 1
    assert kinds["RGB"] > kinds["L"] + kinds["CMYK"] + kinds["EXIF"]
    assert len(widths) > 5 and len(heights) > 5
    assert min(widths | heights) >= 50 and max(widths | heights) <= 640


# ------------------------------------------------------------------------- out dir handling


def test_refuses_non_empty_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_sample(out, per_category=1)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp dir left


def test_fills_existing_empty_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    generate_sample(out, per_category=1)
    assert (out / PRODUCTS_FILE).is_file()


def test_cli_refuses_then_replaces_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("previous export")
    args = ["--out", str(out), "--seed", "3", "--per-category", "2"]

    assert sample_cli.main(args) == 2
    captured = capsys.readouterr()
    assert "not empty" in captured.err and "--force" in captured.err
    assert "Traceback" not in captured.err
    assert [p.name for p in out.iterdir()] == ["old.txt"]

    assert sample_cli.main([*args, "--force"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1
    assert f"{2 * len(ROOT_CATEGORIES) + 1} products" in summary[0]
    assert not (out / "old.txt").exists()
    assert (out / PRODUCTS_FILE).is_file() and (out / IMAGES_DIR).is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # staging cleaned up

    # The CLI writes exactly what the library writes for the same arguments.
    generate_sample(tmp_path / "direct", seed=3, per_category=2)
    assert _tree_digest(out) == _tree_digest(tmp_path / "direct")
