"""Listing photos for the search page: one small thumbnail per listing, inside the index.

The API answers with product records whose ``image_id`` names a photo in the trainer's
``outputs/images/``; a service that has only the registry behind it cannot show it. The
``index`` stage therefore stores one thumbnail per listing that has a photo in the index
folder, which is logged into the registered model version, so ``models:/<name>@production``
carries the catalogue's pictures with its vectors and records.

Layout (two files, described by the first):

- ``thumbnails.json``: format version, image type, size, quality, the number of
  thumbnails and their bytes, the SHA-256 of the data file, and ``products``: product id
  -> ``[offset, length]`` in the data file;
- ``thumbnails.bin``: the encoded thumbnails back to back (WebP by default: at the same
  visual quality about a third smaller than JPEG, and every current browser decodes it).

One data file rather than thousands of small ones: the registry logs and downloads a
handful of files instead of 5,390, and serving keeps a single ``bytes`` object in memory
(thumbnails are ~3-4 KB each) and answers a request with a slice of it.

A thumbnail is made from the listing's first cleaned photo (``outputs/images/<id>.jpg``,
the very pixels the encoders saw): the black letterbox bars of the cleaning canvas are
trimmed, the photo is fitted into ``size`` x ``size`` keeping its aspect ratio (never
enlarged) and encoded at ``quality``. An index folder without ``thumbnails.json`` (built
before this existed) still loads; ``ThumbnailSet.load`` returns ``None`` for it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from marketplace.core.io import file_sha256, read_json_or_none, write_json

THUMBNAILS_FORMAT = 1
THUMBNAILS_META = "thumbnails.json"
THUMBNAILS_DATA = "thumbnails.bin"
# Beside them in the thumbnails stage's out only (the index does not copy it): which photo
# (SHA-256 of the cleaned canvas) and params each thumbnail was made from, for reuse.
THUMBNAILS_KEYS = "keys.json"
MEDIA_TYPES = {"webp": "image/webp", "jpeg": "image/jpeg"}
# Pixels darker than this (0-255, on the grey level) count as the cleaning canvas when the
# letterbox bars are trimmed: JPEG ringing leaves values of a few units around the photo.
LETTERBOX_LEVEL = 12


def make_thumbnail(source: Path | bytes, size: int, quality: int, image_format: str) -> bytes:
    """One encoded thumbnail of a cleaned photo (see the module docstring)."""
    if image_format not in MEDIA_TYPES:
        raise ValueError(
            f"thumbnail format must be one of {sorted(MEDIA_TYPES)}, not {image_format!r}"
        )
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image = image.convert("RGB")
    box = image.convert("L").point(lambda v: 255 if v > LETTERBOX_LEVEL else 0).getbbox()
    if box is not None:  # an all-black photo keeps its whole canvas
        image = image.crop(box)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if image_format == "webp":
        image.save(out, "WEBP", quality=quality, method=6)
    else:
        image.save(out, "JPEG", quality=quality, optimize=True, progressive=True)
    return out.getvalue()


@dataclass(frozen=True)
class ThumbnailSet:
    """The thumbnails of an index: product id -> encoded image, held in memory."""

    data: bytes
    offsets: dict[str, tuple[int, int]]  # product id -> (offset, length) in ``data``
    image_format: str
    size: int
    quality: int
    sha256: str  # of ``data``: identifies this set (the API's ETag is built from it)

    def __len__(self) -> int:
        return len(self.offsets)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self.offsets

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.image_format]

    def get(self, product_id: str) -> bytes | None:
        """The encoded thumbnail of a product, or ``None`` if it has none."""
        span = self.offsets.get(product_id)
        if span is None:
            return None
        return self.data[span[0] : span[0] + span[1]]

    def describe(self) -> dict[str, Any]:
        """What ``thumbnails.json`` records besides the offsets (also the stage's metrics)."""
        return {
            "format_version": THUMBNAILS_FORMAT,
            "image_format": self.image_format,
            "media_type": self.media_type,
            "size": self.size,
            "quality": self.quality,
            "count": len(self),
            "bytes": len(self.data),
            "sha256": self.sha256,
        }

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / THUMBNAILS_DATA).write_bytes(self.data)
        meta = {**self.describe(), "products": {k: list(v) for k, v in self.offsets.items()}}
        (folder / THUMBNAILS_META).write_text(json.dumps(meta, separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ThumbnailSet | None:
        """Read the thumbnails of an index folder; ``None`` if it has none (an older index)."""
        meta_path = folder / THUMBNAILS_META
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{meta_path}: unreadable thumbnail table: {exc}") from None
        if meta.get("format_version") != THUMBNAILS_FORMAT:
            raise ValueError(f"{meta_path}: unsupported format {meta.get('format_version')}")
        data = (folder / THUMBNAILS_DATA).read_bytes()
        if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ValueError(f"{folder / THUMBNAILS_DATA} does not match {THUMBNAILS_META}")
        return cls(
            data=data,
            offsets={k: (int(v[0]), int(v[1])) for k, v in meta["products"].items()},
            image_format=meta["image_format"],
            size=int(meta["size"]),
            quality=int(meta["quality"]),
            sha256=meta["sha256"],
        )


def _thumbnail_job(job: tuple[str, Path, int, int, str]) -> tuple[str, bytes]:
    product_id, path, size, quality, image_format = job
    return product_id, make_thumbnail(path, size, quality, image_format)


def build_thumbnails(
    products: Iterable[tuple[str, Sequence[str]]],
    images_dir: Path,
    *,
    size: int,
    quality: int,
    image_format: str,
    workers: int = 1,
    reuse: Mapping[str, bytes] | None = None,
    keys: dict[str, str] | None = None,
) -> ThumbnailSet:
    """Thumbnails of ``(product id, image ids)`` pairs from the cleaned photos in ``images_dir``.

    A product's first image id with a cleaned file is used; products with none get no
    thumbnail (the API answers 404 for them). ``workers`` > 1 encodes in that many
    processes (WebP at ``method=6`` is the slow part). Incremental: with ``keys`` (filled
    in: product id -> SHA-256 of the photo its thumbnail is made from) and ``reuse`` (such
    a hash -> a thumbnail made from it with the same params), a photo already encoded is
    not encoded again; the result is the same bytes either way.
    """
    order: list[str] = []
    ready: dict[str, bytes] = {}
    jobs = []
    for product_id, image_ids in products:
        path = next((p for p in (images_dir / f"{i}.jpg" for i in image_ids) if p.is_file()), None)
        if path is None:
            continue
        product_id = str(product_id)
        order.append(product_id)
        if keys is not None or reuse is not None:
            digest = file_sha256(path)
            if keys is not None:
                keys[product_id] = digest
            if reuse is not None and digest in reuse:
                ready[product_id] = reuse[digest]
                continue
        jobs.append((product_id, path, size, quality, image_format))
    if workers > 1 and len(jobs) > 64:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            ready.update(pool.map(_thumbnail_job, jobs, chunksize=64))
    else:
        ready.update(_thumbnail_job(job) for job in jobs)
    offsets: dict[str, tuple[int, int]] = {}
    chunks = []
    position = 0
    for product_id in order:
        blob = ready[product_id]
        offsets[product_id] = (position, len(blob))
        chunks.append(blob)
        position += len(blob)
    data = b"".join(chunks)
    return ThumbnailSet(
        data=data,
        offsets=offsets,
        image_format=image_format,
        size=size,
        quality=quality,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def product_photos(listings: Any) -> Any:
    """Each product's image ids (a ``Series`` of lists indexed by product id, in the
    listings' order), as ``training.inputs.products_table`` has them: this stage reads
    the cleaned listings without importing training code (a head change must not rebuild
    the thumbnails)."""
    photos = listings.dropna(subset=["image_id"]).groupby("product_id")["image_id"].agg(list)
    order = listings["product_id"].drop_duplicates()
    return photos.reindex(order).apply(lambda v: v if isinstance(v, list) else [])


def catalogue_thumbnails(
    image_ids: Any,
    images_dir: Path,
    params: Any,
    workers: int | None = None,
    *,
    keys: dict[str, str] | None = None,
    reuse: Mapping[str, bytes] | None = None,
) -> ThumbnailSet | None:
    """The thumbnails of a catalogue (each product's image ids, as ``product_photos`` or
    ``products_table(...)["image_ids"]`` give them) as the index params ask
    (``thumbnail_size``, ``_quality``, ``_format``); ``None`` when the size is 0.
    ``keys`` and ``reuse``: see ``build_thumbnails`` (``reusable_thumbnails`` gives them).
    """
    if not params.thumbnail_size:
        return None
    return build_thumbnails(
        zip(image_ids.index, image_ids, strict=True),
        images_dir,
        size=params.thumbnail_size,
        quality=params.thumbnail_quality,
        image_format=params.thumbnail_format,
        workers=workers if workers is not None else (os.cpu_count() or 1),
        keys=keys,
        reuse=reuse,
    )


def _keys_params(params: Any) -> dict[str, Any]:
    return {
        "format_version": THUMBNAILS_FORMAT,
        "size": params.thumbnail_size,
        "quality": params.thumbnail_quality,
        "image_format": params.thumbnail_format,
    }


def reusable_thumbnails(folder: Path, params: Any) -> dict[str, bytes]:
    """Photo hash -> thumbnail, from the thumbnails an earlier run left in ``folder``
    (``THUMBNAILS_KEYS`` says which photo each was made from); empty when there are none
    or other params made them (then every thumbnail is encoded again)."""
    keys = read_json_or_none(folder / THUMBNAILS_KEYS)
    if not isinstance(keys, dict) or keys.get("params") != _keys_params(params):
        return {}
    try:
        previous = ThumbnailSet.load(folder)
    except (OSError, ValueError, KeyError):
        return {}
    if previous is None:
        return {}
    reuse = {}
    for product_id, digest in keys.get("products", {}).items():
        blob = previous.get(product_id)
        if blob is not None:
            reuse[digest] = blob
    return reuse


def save_thumbnail_keys(folder: Path, params: Any, keys: Mapping[str, str]) -> None:
    """``THUMBNAILS_KEYS``: the params and, per product, the hash of its thumbnail's photo."""
    write_json(folder / THUMBNAILS_KEYS, {"params": _keys_params(params), "products": keys})


def thumbnail_metrics(thumbnails: ThumbnailSet | None) -> dict[str, float]:
    """Count and total bytes, for the index stage's metrics (nothing without thumbnails)."""
    if thumbnails is None:
        return {}
    return {"thumbnails": float(len(thumbnails)), "thumbnail_bytes": float(len(thumbnails.data))}
