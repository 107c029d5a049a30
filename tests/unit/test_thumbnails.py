"""Listing thumbnails: letterbox trimmed, aspect kept, one data file with offsets, strict load."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from marketplace.core.config import ConfigError, params_from_dict
from marketplace.search.thumbnails import (
    THUMBNAILS_DATA,
    THUMBNAILS_META,
    ThumbnailSet,
    build_thumbnails,
    catalogue_thumbnails,
    make_thumbnail,
    thumbnail_metrics,
)
from tests.helpers.synthetic import params_with


def _canvas(path: Path, photo: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    """A cleaned photo: ``photo`` (w, h) of one colour centred on a black 256 px canvas."""
    canvas = Image.new("RGB", (256, 256))
    w, h = photo
    canvas.paste(Image.new("RGB", (w, h), colour), ((256 - w) // 2, (256 - h) // 2))
    canvas.save(path, "JPEG", quality=90)
    return path


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(("image_format", "pil_format"), [("webp", "WEBP"), ("jpeg", "JPEG")])
def test_thumbnail_trims_the_letterbox_and_keeps_the_aspect(
    tmp_path: Path, image_format: str, pil_format: str
) -> None:
    source = _canvas(tmp_path / "a.jpg", (240, 120), (200, 40, 40))
    thumb = _decode(make_thumbnail(source, 64, 70, image_format))
    assert thumb.format == pil_format
    assert thumb.size[0] == 64 and abs(thumb.size[1] - 32) <= 1  # 2:1 kept, bars gone
    r, g, b = thumb.convert("RGB").getpixel((32, thumb.size[1] // 2))
    assert r > 150 and g < 90 and b < 90  # the photo, not a black bar


def test_thumbnail_is_never_enlarged_and_a_black_photo_keeps_its_canvas(tmp_path: Path) -> None:
    small = _canvas(tmp_path / "s.jpg", (40, 30), (0, 200, 0))
    width, height = _decode(make_thumbnail(small, 128, 70, "webp")).size
    assert 40 <= width <= 42 and 30 <= height <= 32  # the photo (JPEG ringing: a pixel more)
    black = tmp_path / "b.jpg"
    Image.new("RGB", (256, 256)).save(black, "JPEG")
    assert _decode(make_thumbnail(black, 64, 70, "webp")).size == (64, 64)
    with pytest.raises(ValueError, match="thumbnail format"):
        make_thumbnail(black, 64, 70, "gif")


def test_build_save_load_round_trip(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    _canvas(images / "i1.jpg", (200, 200), (10, 10, 200))
    _canvas(images / "i3.jpg", (100, 200), (200, 200, 10))
    products = [
        ("p1", ["i1"]),
        ("p2", []),  # no photo
        ("p3", ["missing", "i3"]),  # the first cleaned photo is used
        ("p4", ["missing"]),  # its photo failed cleaning
    ]
    built = build_thumbnails(products, images, size=48, quality=60, image_format="webp")
    assert set(built.offsets) == {"p1", "p3"} and len(built) == 2
    assert built.get("p2") is None and "p1" in built and "p4" not in built
    width, height = _decode(built.get("p3")).size  # type: ignore[arg-type]
    assert height == 48 and abs(width - 24) <= 1
    assert built.media_type == "image/webp"
    built.save(tmp_path / "index")
    loaded = ThumbnailSet.load(tmp_path / "index")
    assert loaded == built
    assert thumbnail_metrics(loaded) == {"thumbnails": 2.0, "thumbnail_bytes": len(built.data)}
    # Several processes give the very same bytes (DVC hashes the folder).
    again = build_thumbnails(
        products * 40, images, size=48, quality=60, image_format="webp", workers=2
    )
    assert again.get("p3") == built.get("p3")


def test_an_index_without_thumbnails_loads_as_none_and_a_damaged_one_is_refused(
    tmp_path: Path,
) -> None:
    assert ThumbnailSet.load(tmp_path) is None
    images = tmp_path / "images"
    images.mkdir()
    _canvas(images / "i1.jpg", (200, 200), (10, 10, 200))
    build_thumbnails([("p1", ["i1"])], images, size=32, quality=60, image_format="jpeg").save(
        tmp_path / "index"
    )
    data = tmp_path / "index" / THUMBNAILS_DATA
    data.write_bytes(data.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="does not match"):
        ThumbnailSet.load(tmp_path / "index")
    (tmp_path / "index" / THUMBNAILS_META).write_text("{")
    with pytest.raises(ValueError, match="unreadable"):
        ThumbnailSet.load(tmp_path / "index")


def test_catalogue_thumbnails_follow_the_index_params(tmp_path: Path) -> None:
    _canvas(tmp_path / "i1.jpg", (200, 100), (10, 10, 200))
    products = pd.DataFrame({"image_ids": [["i1"], []]}, index=pd.Index(["p1", "p2"]))
    params = params_from_dict(params_with("index.thumbnail_size", 40)).index
    built = catalogue_thumbnails(products["image_ids"], tmp_path, params, workers=1)
    assert built is not None and list(built.offsets) == ["p1"] and built.size == 40
    assert (
        catalogue_thumbnails(
            products["image_ids"],
            tmp_path,
            params_from_dict(params_with("index.thumbnail_size", 0)).index,
        )
        is None
    )
    assert thumbnail_metrics(None) == {}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "index.thumbnail_size",
            8,
            r"index.thumbnail_size: must be 0 \(no thumbnails\) or in 16..1024",
        ),
        (
            "index.thumbnail_quality",
            0,
            r"index.thumbnail_quality: .*greater than or equal to 1 \(got 0\)",
        ),
        ("index.thumbnail_format", "gif", "index.thumbnail_format"),
    ],
)
def test_thumbnail_params_are_checked(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(params_with(key, value))
