"""Image decoding and canvas normalisation, shared by the cleaning stage and serving.

Every photo becomes an RGB image whose longest side is fitted into a ``size`` x ``size``
black canvas, centred, aspect kept, EXIF orientation honoured (the seed's
``clean_images.py``, made robust). Whatever a file holds (grayscale, CMYK, transparent
PNG, 16-bit, a truncated JPEG, a text file named ``.jpg``), the result is either a clean
image or an ``ImageError`` whose ``reason`` says why not: never a crash, never a silent drop.
"""

from __future__ import annotations

import io
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from marketplace.compute.batches import Runner, stream_batches
from marketplace.core.errors import InputError
from marketplace.core.io import file_sha256, read_json_or_none, write_json
from marketplace.data.export import read_export_csv
from marketplace.data.schema import IMAGE_COLUMNS, IMAGE_EXTENSIONS, IMAGES_DIR, IMAGES_FILE

# Pillow's own decompression-bomb limit (~179 Mpx): reused, but raised as an error.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 178_956_970


class ImageError(InputError):
    """A file that cannot become a clean image; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def canvas_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where an image of ``width`` x ``height`` goes on a ``size`` canvas.

    Returns ``(new_width, new_height, left, top)``: the longest side becomes ``size`` (small
    images are scaled up, as in the seed, so every canvas is filled the same way), the other
    side keeps the aspect ratio (at least 1 px), and the image is centred.
    """
    if width <= 0 or height <= 0 or size <= 0:
        raise ValueError(f"bad geometry {width}x{height} -> {size}")
    scale = size / max(width, height)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    return new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB version of any Pillow image.

    EXIF orientation is applied first. Transparency is composited onto black (the canvas
    colour) rather than dropped, so a transparent PNG does not turn into noise; 16-bit and
    float images are rescaled to 8 bits instead of clipped.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    as_float = image.convert("F")
    low, high = as_float.getextrema()
    span = (high - low) or 1.0
    return as_float.point(lambda v: (v - low) * 255.0 / span).convert("L")


def fit_to_canvas(image: Image.Image, size: int) -> Image.Image:
    """Fit an RGB image into a black ``size`` x ``size`` canvas (see ``canvas_geometry``)."""
    new_w, new_h, left, top = canvas_geometry(image.width, image.height, size)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(image.resize((new_w, new_h), Image.Resampling.LANCZOS), (left, top))
    return canvas


def decode_image(source: Path | bytes) -> Image.Image:
    """Open and fully decode an image from a path or bytes, or raise ``ImageError``.

    Fully decoding (not just reading the header) is what exposes truncated files. Images
    over ``MAX_IMAGE_PIXELS`` are refused before decoding (decompression bombs).
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ImageError(
                    "too_large", f"{image.width}x{image.height} exceeds {MAX_IMAGE_PIXELS} pixels"
                )
            image.load()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("missing_file", f"{source} does not exist") from None
    except UnidentifiedImageError:
        raise ImageError("not_an_image", "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too_large", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("corrupt_image", str(exc) or type(exc).__name__) from None
    return image


def normalise_image(image: Image.Image, size: int) -> Image.Image:
    """Upright RGB ``size`` x ``size`` canvas of a decoded image, or ``ImageError``."""
    try:
        return fit_to_canvas(to_rgb(image), size)
    except (OSError, ValueError) as exc:
        raise ImageError("corrupt_image", f"cannot convert {image.mode} image: {exc}") from None


def clean_image(source: Path | bytes, size: int) -> Image.Image:
    """Decode ``source`` and return its upright RGB ``size`` x ``size`` canvas.

    The single preprocessing entry point for raw photos, used by the cleaning stage and
    by the API on uploads, so both see identical pixels.
    """
    return normalise_image(decode_image(source), size)


@dataclass(frozen=True)
class ImageResult:
    """Outcome for one image row of the export."""

    image_id: str
    status: str  # "ok" or an ImageError reason
    detail: str
    source: str  # file name inside the images folder ("" when missing)
    width: int  # original size as stored (before EXIF rotation); 0 when not decoded
    height: int
    mode: str


def index_image_files(images_dir: Path) -> dict[str, Path]:
    """Map image id (file stem) -> path for every image-like file in the folder.

    Listed once up front so that thousands of lookups cost nothing. A stem present with
    several extensions keeps the first in ``IMAGE_EXTENSIONS`` order.
    """
    found: dict[str, Path] = {}
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    with os.scandir(images_dir) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            ext = ext.lower()
            if ext not in rank or not entry.is_file():
                continue
            current = found.get(stem)
            if current is None or rank[ext] < rank[current.suffix.lower()]:
                found[stem] = Path(entry.path)
    return found


def _clean_one(task: tuple[str, str | None, str, int, int]) -> ImageResult:
    image_id, source, out_dir, size, quality = task
    if source is None:
        return ImageResult(image_id, "missing_file", "no file for this image id", "", 0, 0, "")
    name = os.path.basename(source)
    try:
        original = decode_image(Path(source))
        canvas = normalise_image(original, size)
        canvas.save(os.path.join(out_dir, f"{image_id}.jpg"), "JPEG", quality=quality)
    except ImageError as exc:
        return ImageResult(image_id, exc.reason, exc.detail, name, 0, 0, "")
    except OSError as exc:  # writing the output failed: report it, keep going
        return ImageResult(image_id, "write_failed", str(exc), name, 0, 0, "")
    return ImageResult(image_id, "ok", "", name, original.width, original.height, original.mode)


def _cleaner(*, progress: bool = False) -> Callable[[list[Any]], list[ImageResult]]:
    """The per-batch function of cleaning on Ray: ``_clean_one`` of each task."""
    return lambda tasks: [_clean_one(tuple(task)) for task in tasks]


def clean_image_files(
    image_ids: Iterable[str],
    images_dir: Path,
    out_dir: Path,
    *,
    size: int,
    jpeg_quality: int,
    workers: int = 0,
    progress: bool = True,
    runner: Runner | None = None,
) -> Iterator[ImageResult]:
    """Clean the photo of each image id into ``out_dir/<id>.jpg``, yielding one result each.

    Runs on ``workers`` processes (0 = one per core); decoding and resizing are CPU-bound
    and release the GIL only in part, so processes beat threads. Results come back in the
    order of ``image_ids``. Missing, corrupt and non-image files yield a result with the
    reason instead of raising. With a ``runner`` (``marketplace.compute.ray``) the same
    ``_clean_one`` runs on Ray workers instead of ``workers`` processes.
    """
    ids = list(dict.fromkeys(image_ids))
    files = index_image_files(images_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [
        (i, str(files[i]) if i in files else None, str(out_dir), size, jpeg_quality) for i in ids
    ]
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(tasks), desc="clean_images", unit="img", disable=not progress)
    with bar:
        if runner is not None:
            for block in stream_batches(_cleaner, tasks, runner):
                yield from block
                bar.update(len(block))
            return
        if workers == 1:
            for task in tasks:
                yield _clean_one(task)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            chunksize = max(1, min(64, len(tasks) // (workers * 8) or 1))
            for result in pool.map(_clean_one, tasks, chunksize=chunksize):
                yield result
                bar.update()


def unlisted_files(images_dir: Path, image_ids: Iterable[str]) -> list[str]:
    """Names of files in the images folder that no image row refers to (reported, not used)."""
    listed = set(image_ids)
    return sorted(
        entry.name
        for entry in os.scandir(images_dir)
        if entry.is_file() and os.path.splitext(entry.name)[0] not in listed
    )


def results_frame(results: Iterable[ImageResult]) -> pd.DataFrame:
    """Results as a table: the per-image report of the cleaning stage."""
    columns = list(ImageResult.__dataclass_fields__)
    return pd.DataFrame([asdict(r) for r in results], columns=columns)


MANIFEST = "manifest.json"  # in the cleaned folder: what each canvas was made from
MANIFEST_FORMAT = 1


def _manifest_params(size: int, jpeg_quality: int) -> dict[str, object]:
    """What a canvas depends on besides the photo's bytes (a change recomputes all)."""
    return {"format": MANIFEST_FORMAT, "size": size, "jpeg_quality": jpeg_quality}


def read_manifest(out_dir: Path, size: int, jpeg_quality: int) -> dict[str, dict[str, Any]]:
    """The reusable results of an earlier run into ``out_dir``: image id -> its ``ImageResult``
    fields and ``sha256`` (of the photo it was made from); empty when there was none, or it
    was made with other params (then nothing is reused)."""
    manifest = read_json_or_none(out_dir / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("params") != _manifest_params(
        size, jpeg_quality
    ):
        return {}
    images = manifest.get("images")
    return images if isinstance(images, dict) else {}


def clean_export_images(
    export_dir: Path,
    out_dir: Path,
    *,
    size: int,
    jpeg_quality: int,
    workers: int = 0,
    progress: bool = True,
    runner: Runner | None = None,
    reuse: bool = True,
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Clean the photo of every image row of an export's ``Images.csv``.

    Reads ``Images.csv`` itself rather than the cleaned table, so that a change to tabular
    cleaning never re-runs the (slow) image stage. Returns the per-image report and the
    metrics: rows in, images cleaned (``computed`` now, ``reused`` from the last run),
    failures per reason, and files that no row lists.

    Incremental: ``out_dir/manifest.json`` records, for every canvas, the SHA-256 of the
    photo it was made from and the params (size, JPEG quality). With ``reuse``, a canvas
    whose photo bytes and params are unchanged is kept as it is; only new or changed photos
    are cleaned, and canvases of image ids no longer listed (or no longer cleanable) are
    deleted, so the folder equals a cold build's, manifest included. The DVC out is
    ``persist: true`` so that DVC leaves the folder in place for this.
    """
    rows, row_issues = read_export_csv(export_dir / IMAGES_FILE, IMAGE_COLUMNS)
    ids = list(dict.fromkeys(row["id"].strip() for _, row in rows if row["id"].strip()))
    images_dir = export_dir / IMAGES_DIR
    files = index_image_files(images_dir)
    previous = read_manifest(out_dir, size, jpeg_quality) if reuse else {}
    if not previous and out_dir.exists():  # stale canvases from an earlier run must not survive
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hashes = {i: file_sha256(files[i]) for i in ids if i in files}
    reused: dict[str, ImageResult] = {}
    for i, digest in hashes.items():
        old = previous.get(i)
        if old is not None and old.get("sha256") == digest and (out_dir / f"{i}.jpg").is_file():
            fields = {k: old[k] for k in ImageResult.__dataclass_fields__}
            reused[i] = ImageResult(**fields)
    todo = [i for i in ids if i not in reused]
    for i in todo:  # never write through a file of the earlier run (it may be a DVC link)
        (out_dir / f"{i}.jpg").unlink(missing_ok=True)
    computed = {
        r.image_id: r
        for r in clean_image_files(
            todo,
            images_dir,
            out_dir,
            size=size,
            jpeg_quality=jpeg_quality,
            workers=workers,
            progress=progress,
            runner=runner,
        )
    }
    results = [reused[i] if i in reused else computed[i] for i in ids]
    keep = {f"{r.image_id}.jpg" for r in results if r.status == "ok"} | {MANIFEST}
    for entry in os.scandir(out_dir):  # deleted ids, and outputs of now failing photos
        if entry.name not in keep:
            os.unlink(entry.path)
    write_json(
        out_dir / MANIFEST,
        {
            "params": _manifest_params(size, jpeg_quality),
            "images": {
                r.image_id: {**asdict(r), "sha256": hashes[r.image_id]}
                for r in results
                if r.status == "ok"
            },
        },
    )
    report = results_frame(results)
    unlisted = unlisted_files(images_dir, ids)
    failed = Counter(r.status for r in results if r.status != "ok")
    metrics: dict[str, object] = {
        "image_rows": len(rows) + len(row_issues),
        "unreadable_rows": len(row_issues),
        "unique_ids": len(results),
        "cleaned": sum(r.status == "ok" for r in results),
        "reused": len(reused),
        "computed": len(todo),
        "failed": dict(sorted(failed.items())),
        "unlisted_files": len(unlisted),
        "size": size,
    }
    if unlisted:
        extra = pd.DataFrame(
            {
                "image_id": "",
                "status": "unlisted_file",
                "detail": "no Images.csv row names it",
                "source": unlisted,
                "width": 0,
                "height": 0,
                "mode": "",
            }
        )
        report = pd.concat([report, extra], ignore_index=True)
    return report, metrics
