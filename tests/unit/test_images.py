"""Canvas geometry, EXIF, colour modes and every way a file can fail to be an image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marketplace.data import images as images_module
from marketplace.data.images import (
    ImageError,
    canvas_geometry,
    clean_image,
    clean_image_files,
    decode_image,
    fit_to_canvas,
    to_rgb,
)


@pytest.mark.parametrize(
    ("w", "h", "size", "expected"),
    [
        (1024, 512, 512, (512, 256, 0, 128)),  # landscape: full width, centred vertically
        (300, 600, 512, (256, 512, 128, 0)),  # portrait
        (100, 100, 512, (512, 512, 0, 0)),  # small square is scaled up, as in the seed
        (512, 512, 512, (512, 512, 0, 0)),
        (3000, 10, 512, (512, 2, 0, 255)),  # extreme aspect ratio keeps >= 1 px
        (10000, 1, 64, (64, 1, 0, 31)),
        (333, 200, 100, (100, 60, 0, 20)),
    ],
)
def test_canvas_geometry(w: int, h: int, size: int, expected: tuple[int, int, int, int]) -> None:
    assert canvas_geometry(w, h, size) == expected


def test_canvas_geometry_rejects_empty_images() -> None:
    with pytest.raises(ValueError):
        canvas_geometry(0, 10, 512)


def test_fit_to_canvas_centres_on_black() -> None:
    white = Image.new("RGB", (200, 100), (255, 255, 255))
    canvas = np.asarray(fit_to_canvas(white, 64))
    assert canvas.shape == (64, 64, 3)
    assert canvas[:16].max() == 0 and canvas[48:].max() == 0  # black bands top and bottom
    assert canvas[20:44].min() == 255  # the image fills the middle


def _jpeg_with_orientation(orientation: int) -> bytes:
    """A 40x20 image, left half red and right half blue, stored with an EXIF orientation."""
    upright = Image.new("RGB", (40, 20), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 20, 20))
    # Store the pixels so that applying `orientation` brings back the upright image.
    inverse = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    stored = upright.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_honoured(orientation: int) -> None:
    image = to_rgb(decode_image(_jpeg_with_orientation(orientation)))
    assert image.size == (40, 20)
    left, right = np.asarray(image)[10, 5], np.asarray(image)[10, 35]
    assert left[0] > 200 and left[2] < 60, "left half should be red"
    assert right[2] > 200 and right[0] < 60, "right half should be blue"


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (30, 20), 128),
        Image.new("CMYK", (30, 20), (0, 255, 255, 0)),
        Image.new("RGBA", (30, 20), (255, 0, 0, 0)),
        Image.new("LA", (30, 20), (200, 255)),
        Image.new("1", (30, 20), 1),
        Image.new("I;16", (30, 20), 40000),
    ],
    ids=lambda im: im.mode,
)
def test_every_mode_becomes_rgb(image: Image.Image) -> None:
    fmt = "JPEG" if image.mode in ("L", "CMYK") else "PNG"
    canvas = clean_image(_encode(image, fmt), 32)
    assert canvas.mode == "RGB" and canvas.size == (32, 32)


def test_transparency_is_composited_on_black() -> None:
    image = Image.new("RGBA", (20, 20), (255, 255, 255, 0))
    image.paste((255, 255, 255, 255), (0, 0, 10, 20))  # left half opaque white
    rgb = np.asarray(to_rgb(decode_image(_encode(image, "PNG"))))
    assert rgb[:, :10].min() == 255 and rgb[:, 10:].max() == 0


def test_palette_with_transparency() -> None:
    image = Image.new("P", (10, 10), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    data = _encode(image, "PNG")
    reopened = Image.open(io.BytesIO(data))
    reopened.info["transparency"] = 0
    assert to_rgb(reopened).mode == "RGB"


def test_decode_errors_have_reasons(tmp_path: Path) -> None:
    good = _encode(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")
    with pytest.raises(ImageError) as truncated:
        decode_image(good[: len(good) // 2])
    assert truncated.value.reason == "corrupt_image"
    with pytest.raises(ImageError) as text:
        decode_image(b"this is not an image\n")
    assert text.value.reason == "not_an_image"
    with pytest.raises(ImageError) as missing:
        decode_image(tmp_path / "nope.jpg")
    assert missing.value.reason == "missing_file"


def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError) as bomb:
        decode_image(_encode(Image.new("RGB", (20, 20)), "PNG"))
    assert bomb.value.reason == "too_large"


@pytest.mark.parametrize("workers", [1, 2])
def test_clean_image_files_reports_and_keeps_order(tmp_path: Path, workers: int) -> None:
    src = tmp_path / "images"
    src.mkdir()
    (src / "a.jpg").write_bytes(_encode(Image.new("RGB", (50, 20), (255, 0, 0)), "JPEG"))
    (src / "b.png").write_bytes(_encode(Image.new("RGBA", (20, 50)), "PNG"))
    (src / "c.jpg").write_text("not an image")
    good = _encode(Image.new("RGB", (80, 80), (1, 2, 3)), "JPEG")
    (src / "d.jpg").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    ids = ["a", "missing", "b", "c", "d", "a"]
    results = list(
        clean_image_files(ids, src, out, size=32, jpeg_quality=90, workers=workers, progress=False)
    )
    assert [(r.image_id, r.status) for r in results] == [
        ("a", "ok"),
        ("missing", "missing_file"),
        ("b", "ok"),
        ("c", "not_an_image"),
        ("d", "corrupt_image"),
    ]
    assert (results[0].width, results[0].height, results[0].mode) == (50, 20, "RGB")
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]
    assert Image.open(out / "b.jpg").size == (32, 32)
