"""Deterministic synthetic marketplace export: the project's built-in sample data.

Demos and CI run the whole pipeline on this instead of the real Gumtree export, so it copies
that export's *format* exactly (see :mod:`marketplace.data.schema` and the real folder's
SOURCE.md) while every value is made up from a seeded RNG:

* ``Products.csv`` and ``Images.csv`` written the way pandas wrote the real files (unnamed
  integer index first, records ending in ``"\\n"``, bare ``"\\r"`` inside some descriptions);
* ``images/<image id>.jpg``: one picture per image row, drawn with PIL, in a spread of sizes,
  aspect ratios and modes (RGB, L, CMYK, EXIF-rotated JPEGs and one RGBA PNG).

The content is learnable but not trivially: every root category has its own visual "look"
(shape family, hue, fill pattern) and vocabulary, the looks and vocabularies overlap between
pairs of categories, some listings are ambiguous and about 3% are mislabelled.

The export also carries a fixed set of deliberate faults (bad prices, a duplicate product id,
missing, truncated and non-image files, an orphan image row) so that tests can check that the
cleaning stages report every one of them; :class:`SampleFaults` lists them.

Two runs with the same ``seed`` and ``per_category`` give byte-identical files: the only source
of randomness is ``random.Random``/``numpy.random.default_rng`` seeded from ``seed``, nothing
depends on time, hash order or file-system order, and PIL encodes identical pixels identically.

The command (``marketplace sample``, or ``python -m marketplace.data.sample``)::

    marketplace sample [--out data] [--seed 0] [--per-category 100] [--force]

Without ``--force`` an existing non-empty output directory is an error (exit code 2). With
``--force`` the new export is generated next to it first and only then swapped in, so a
failed run never leaves the old export half-deleted.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import random
import shutil
import string
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, ImageDraw

from marketplace.core.io import replace_dir
from marketplace.data.schema import (
    CATEGORY_SEPARATOR,
    CSV_LINE_TERMINATOR,
    IMAGE_COLUMNS,
    IMAGES_DIR,
    IMAGES_FILE,
    PRODUCT_COLUMNS,
    PRODUCTS_FILE,
    ROOT_CATEGORIES,
)

__all__ = ["SampleFaults", "generate_sample"]


@dataclass(frozen=True)
class SampleFaults:
    """What the generator broke on purpose, so tests can check every fault is reported."""

    bad_price_product_ids: tuple[str, ...]
    duplicate_product_ids: tuple[str, ...]
    missing_file_image_ids: tuple[str, ...]
    truncated_image_ids: tuple[str, ...]
    not_an_image_ids: tuple[str, ...]
    orphan_image_ids: tuple[str, ...]
    mislabelled_product_ids: tuple[str, ...]  # not a fault cleaning can see; for information


# --------------------------------------------------------------------------------------------
# Fixed knobs. Counts of faults are exact (tests and cleaning reports rely on them); the
# fractions are approximate targets matched to the real export.
# --------------------------------------------------------------------------------------------

_BAD_PRICES = ("£abc", "Free", "POA", "£1.2.3", "")
_N_MISSING_FILES = 5
_MISLABEL_FRACTION = 0.03
_AMBIGUOUS_FRACTION = 0.05
_CR_FRACTION = 0.30  # descriptions holding bare "\r" between sentences (real: 32%)
_SINGLE_PART_LOCATION_FRACTION = 0.04  # real: 3.6%
_PIPE_TITLE_FRACTION = 0.02
_ZERO_PRICE_FRACTION = 0.012
# Images per product: 0 (~3%), mostly 1-3, rarely 4; mean ~1.7 as in the real Images.csv.
_IMAGES_PER_PRODUCT = (0, 1, 2, 3, 4)
_IMAGES_PER_PRODUCT_WEIGHTS = (0.03, 0.42, 0.35, 0.18, 0.02)
_SPECIAL_MODE_FRACTION = 0.015  # of image rows, for each of: L, CMYK, EXIF-rotated
_JPEG_QUALITY = 80
_BUCKET_URL = (
    "https://aicore-projects-datasets-prod.s3.eu-west-1.amazonaws.com/MetaMarketplaceMLEng/images/"
)
_DATES = ("2022-02-26", "2022-02-27", "2022-02-28")
_NOT_AN_IMAGE_TEXT = (
    "<?xml version='1.0' encoding='UTF-8'?>\n"
    "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>\n"
)
# EXIF Orientation value -> transpose that stores the upright picture so that
# PIL.ImageOps.exif_transpose (which applies the inverse) restores it.
_EXIF_ORIENTATION_TAG = 0x0112
_STORE_ROTATED = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}

# --------------------------------------------------------------------------------------------
# Text vocabulary, in sample_vocabulary.json beside this file. Per root: sub-categories (name,
# leaves, item nouns), brands, adjectives and root-specific sentences. Brands recur across
# roots on purpose (Samsung sells fridges and phones), and the shared vocabulary below is
# used by every root. Read once at import: the tables are constants of the generator.
# --------------------------------------------------------------------------------------------

_Sub = tuple[str, tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class _RootText:
    """Vocabulary and price level of one root category."""

    subs: tuple[_Sub, ...]
    brands: tuple[str, ...]
    adjectives: tuple[str, ...]
    sentences: tuple[str, ...]
    price_median: float


_VOCABULARY = json.loads(
    Path(__file__).with_name("sample_vocabulary.json").read_text(encoding="utf-8")
)


def _tuples(value: Any) -> Any:
    """JSON lists as tuples, nested: the tables are constants."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


_TEXT: dict[str, _RootText] = {
    root: _RootText(
        subs=_tuples(text["subs"]),
        brands=_tuples(text["brands"]),
        adjectives=_tuples(text["adjectives"]),
        sentences=_tuples(text["sentences"]),
        price_median=float(text["price_median"]),
    )
    for root, text in _VOCABULARY["text"].items()
}
# Roots whose items and phrases a listing sometimes borrows (a desk sold under Home & Garden,
# a tablet under Phones): overlap that keeps text classification from being trivial.
_NEIGHBOURS: dict[str, tuple[str, ...]] = {
    root: _tuples(roots) for root, roots in _VOCABULARY["neighbours"].items()
}
# Titles containing " | " themselves (as a few real ones do): prefix per root, then a name.
_PIPE_PREFIXES: dict[str, tuple[str, ...]] = {
    root: _tuples(prefixes) for root, prefixes in _VOCABULARY["pipe_prefixes"].items()
}
_PIPE_NAMES: tuple[str, ...] = _tuples(_VOCABULARY["pipe_names"])
_CONDITIONS: tuple[str, ...] = _tuples(_VOCABULARY["conditions"])
_LOGISTICS: tuple[str, ...] = _tuples(_VOCABULARY["logistics"])
_SHARED_BRANDS: tuple[str, ...] = _tuples(_VOCABULARY["shared_brands"])
_GENERIC_NOUNS: tuple[str, ...] = _tuples(_VOCABULARY["generic_nouns"])
_NOISE_WORDS: tuple[str, ...] = _tuples(_VOCABULARY["noise_words"])
_FIRST_NAMES: tuple[str, ...] = _tuples(_VOCABULARY["first_names"])
_LOCATIONS: tuple[tuple[str, str], ...] = _tuples(_VOCABULARY["locations"])
_SINGLE_LOCATIONS: tuple[str, ...] = _tuples(_VOCABULARY["single_locations"])
_ACCESSORIES: tuple[str, ...] = _tuples(_VOCABULARY["accessories"])
_EMOJI: tuple[str, ...] = _tuples(_VOCABULARY["emoji"])
_BORROW_PROBABILITY = 0.2
_SHARED_BRAND_PROBABILITY = 0.3

# --------------------------------------------------------------------------------------------
# Visual looks. Each root draws one object with a shape family, hue, saturation range and fill
# pattern; most attributes are shared with one or two other roots, so pixels help a classifier
# without settling the label.
# --------------------------------------------------------------------------------------------

_SHAPES = ("rect", "roundrect", "ellipse", "triangle", "hexagon", "star", "ring", "cross")
_PATTERNS = ("solid", "hstripes", "vstripes", "dots", "checker", "gradient")


@dataclass(frozen=True)
class _RootLook:
    """How one root category's object tends to look."""

    shapes: tuple[str, ...]
    hue: float  # degrees
    sat: tuple[float, float]
    patterns: tuple[str, ...]
    aspect: tuple[float, float]  # object width / height


# fmt: off
_LOOKS: dict[str, _RootLook] = {
    "Appliances": _RootLook(("rect",), 200, (0.05, 0.3), ("solid", "gradient"), (0.6, 0.9)),
    "Baby & Kids Stuff": _RootLook(("star", "ellipse"), 330, (0.5, 0.9), ("dots", "solid"),
                                   (0.8, 1.25)),
    "Clothes, Footwear & Accessories": _RootLook(("triangle", "cross"), 330, (0.35, 0.8),
                                                 ("hstripes", "checker"), (0.7, 1.1)),
    "Computers & Software": _RootLook(("roundrect", "rect"), 215, (0.5, 0.9),
                                      ("gradient", "solid"), (1.2, 1.7)),
    "DIY Tools & Materials": _RootLook(("hexagon", "cross"), 30, (0.7, 1.0),
                                       ("hstripes", "solid"), (0.8, 1.3)),
    "Health & Beauty": _RootLook(("ellipse", "roundrect"), 285, (0.3, 0.7),
                                 ("gradient", "dots"), (0.4, 0.7)),
    "Home & Garden": _RootLook(("rect", "hexagon"), 105, (0.3, 0.7), ("vstripes", "solid"),
                               (1.0, 1.6)),
    "Music, Films, Books & Games": _RootLook(("ring", "rect"), 0, (0.6, 0.95),
                                             ("solid", "hstripes"), (0.75, 1.0)),
    "Office Furniture & Equipment": _RootLook(("roundrect", "rect"), 30, (0.1, 0.4),
                                              ("vstripes", "checker"), (1.1, 1.6)),
    "Other Goods": _RootLook(_SHAPES, 55, (0.3, 0.9), _PATTERNS, (0.6, 1.6)),
    "Phones, Mobile Phones & Telecoms": _RootLook(("roundrect",), 245, (0.15, 0.6),
                                                  ("gradient", "dots"), (0.45, 0.6)),
    "Sports, Leisure & Travel": _RootLook(("ellipse", "ring"), 105, (0.6, 1.0),
                                          ("checker", "hstripes"), (0.9, 1.1)),
    "Video Games & Consoles": _RootLook(("cross", "roundrect"), 285, (0.6, 1.0),
                                        ("solid", "checker"), (1.3, 1.8)),
}
# fmt: on
_ATTRIBUTE_SWAP_PROBABILITY = 0.2  # per attribute, per product: take a random one instead
_HUE_JITTER_DEG = 16.0


@dataclass(frozen=True)
class _ObjectLook:
    """The drawn object of one product; all its photos show the same object."""

    shape: str
    pattern: str
    colour: tuple[int, int, int]
    colour2: tuple[int, int, int]
    aspect: float


@dataclass(frozen=True)
class _ImageJob:
    """Everything needed to write one image file, independent of every other image."""

    image_id: str
    seed: int
    look: _ObjectLook
    kind: str  # rgb | L | CMYK | exif | rgba_png | truncated | text | missing
    orientation: int = 1


@dataclass
class _Product:
    """One listing while it is being built."""

    product_id: str
    label_root: str
    content_root: str
    name: str
    category: str
    description: str
    price: str
    location: str
    look: _ObjectLook


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def generate_sample(out_dir: Path, *, seed: int = 0, per_category: int = 100) -> SampleFaults:
    """Write a synthetic raw export (Products.csv, Images.csv, images/) to ``out_dir``.

    ``per_category`` products are labelled with each of the 13 root categories, plus one
    duplicated row. Everything is built in a temporary sibling directory that is renamed into
    place at the end, so ``out_dir`` never holds a half-written export. An existing empty
    ``out_dir`` is replaced; a non-empty one raises :class:`FileExistsError` (the CLI's
    ``--force`` handles replacing it). Returns the ids of every deliberate fault.
    """
    out_dir = Path(out_dir)
    if per_category < 1:
        raise ValueError(f"per_category must be at least 1, got {per_category}")
    _refuse_non_empty(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    tmp_dir = _new_sibling_dir(out_dir)
    try:
        faults = _write_export(tmp_dir, seed=seed, per_category=per_category)
        _refuse_non_empty(out_dir)  # re-check: something may have appeared meanwhile
        if out_dir.exists():
            out_dir.rmdir()  # empty directory: replace it
        tmp_dir.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return faults


def _new_sibling_dir(out_dir: Path) -> Path:
    """A fresh hidden directory next to ``out_dir`` (same file system, so rename is atomic).

    Not ``tempfile.mkdtemp``: that makes the directory mode 0700, which the renamed export
    would keep; ``mkdir`` honours the umask like any other output directory. The random
    suffix only names the temporary directory and never reaches the export's bytes.
    """
    while True:
        candidate = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate


def _refuse_non_empty(out_dir: Path) -> None:
    """Raise FileExistsError unless ``out_dir`` is absent or an empty directory."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise FileExistsError(f"{out_dir} exists and is not a directory; refusing to replace it")
    if any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} already exists and is not empty; refusing to overwrite it "
            "(remove it first, or pass --force to `python -m marketplace.data.sample`)"
        )


# --------------------------------------------------------------------------------------------
# Building the tables
# --------------------------------------------------------------------------------------------


def _new_uuid(rnd: random.Random) -> str:
    """A UUID4 string drawn from the seeded RNG (uuid.uuid4() would use the OS RNG)."""
    return str(uuid.UUID(int=rnd.getrandbits(128), version=4))


def _write_export(tmp_dir: Path, *, seed: int, per_category: int) -> SampleFaults:
    """Build both tables and every image file under ``tmp_dir``; return the faults."""
    rnd = random.Random(seed)
    n_products = per_category * len(ROOT_CATEGORIES)

    # Labels are balanced (per_category per root) so every root appears in the category
    # column; ~3% of products draw their content from a different root (mislabelled).
    label_roots = [root for root in ROOT_CATEGORIES for _ in range(per_category)]
    rnd.shuffle(label_roots)
    n_mislabelled = max(1, round(_MISLABEL_FRACTION * n_products))
    mislabelled = set(rnd.sample(range(n_products), n_mislabelled))
    n_ambiguous = round(_AMBIGUOUS_FRACTION * n_products)
    ambiguous = set(rnd.sample(range(n_products), n_ambiguous))

    products: list[_Product] = []
    for i, label_root in enumerate(label_roots):
        content_root = label_root
        if i in mislabelled:
            content_root = rnd.choice([r for r in ROOT_CATEGORIES if r != label_root])
        products.append(_make_product(rnd, label_root, content_root, ambiguous=i in ambiguous))

    # Fault: unparseable prices on five distinct products.
    bad_price_idx = rnd.sample(range(n_products), len(_BAD_PRICES))
    for idx, bad in zip(bad_price_idx, _BAD_PRICES, strict=True):
        products[idx].price = bad

    # Fault: one product's row appears again later, same id, slightly different text.
    candidates = [i for i in range(max(1, n_products // 2)) if i not in bad_price_idx]
    dup_idx = rnd.choice(candidates)
    original = products[dup_idx]
    duplicate = _Product(**vars(original))
    duplicate.description = (
        original.description
        + " "
        + rnd.choice(("Price drop!", "Still available.", "Reduced for quick sale.", "Now reduced."))
    )
    head, marker, tail = original.name.rpartition(" | in ")  # the location part is last
    duplicate.name = f"{head} - reduced{marker}{tail}"
    rows = list(products)
    rows.insert(rnd.randint(dup_idx + 1, len(rows)), duplicate)

    product_df = pd.DataFrame(
        {
            "id": [p.product_id for p in rows],
            "product_name": [p.name for p in rows],
            "category": [p.category for p in rows],
            "product_description": [p.description for p in rows],
            "price": [p.price for p in rows],
            "location": [p.location for p in rows],
        },
        columns=list(PRODUCT_COLUMNS),
    )

    # Image rows: products in a shuffled order, each with 0-4 photos sharing a date.
    image_rows, image_looks = _make_image_rows(rnd, products)
    jobs, faults_by_kind = _plan_images(rnd, image_rows, image_looks)

    images_dir = tmp_dir / IMAGES_DIR
    images_dir.mkdir()
    for job in jobs:
        _write_image(images_dir, job)

    image_df = pd.DataFrame(image_rows, columns=list(IMAGE_COLUMNS))
    product_df.to_csv(tmp_dir / PRODUCTS_FILE, index=True, lineterminator=CSV_LINE_TERMINATOR)
    image_df.to_csv(tmp_dir / IMAGES_FILE, index=True, lineterminator=CSV_LINE_TERMINATOR)

    product_order = {p.product_id: k for k, p in enumerate(products)}
    return SampleFaults(
        bad_price_product_ids=tuple(products[i].product_id for i in sorted(bad_price_idx)),
        duplicate_product_ids=(original.product_id,),
        missing_file_image_ids=faults_by_kind["missing"],
        truncated_image_ids=faults_by_kind["truncated"],
        not_an_image_ids=faults_by_kind["text"],
        orphan_image_ids=faults_by_kind["orphan"],
        mislabelled_product_ids=tuple(
            sorted(
                (p.product_id for p in products if p.label_root != p.content_root),
                key=product_order.__getitem__,
            )
        ),
    )


def _make_image_rows(
    rnd: random.Random, products: list[_Product]
) -> tuple[list[dict[str, str]], list[_ObjectLook]]:
    """Image table rows (and the look each photo shows), with one orphan row inserted."""
    rows: list[dict[str, str]] = []
    looks: list[_ObjectLook] = []
    order = list(range(len(products)))
    rnd.shuffle(order)
    counts = rnd.choices(_IMAGES_PER_PRODUCT, weights=_IMAGES_PER_PRODUCT_WEIGHTS, k=len(order))
    # Tiny samples must still have room for every fault and every image mode.
    minimum = len(_BAD_PRICES) + _N_MISSING_FILES + 12
    k = 0
    while sum(counts) < minimum:
        counts[k % len(counts)] += 1
        k += 1
    for idx, count in zip(order, counts, strict=True):
        product = products[idx]
        date = rnd.choice(_DATES)
        for _ in range(count):
            rows.append(_image_row(rnd, product.product_id, date))
            looks.append(product.look)

    # Fault: an image row whose product_id matches no product (its file is fine).
    orphan_root = rnd.choice(ROOT_CATEGORIES)
    orphan_look = _make_look(rnd, orphan_root)
    position = rnd.randint(1, len(rows) - 1)
    rows.insert(position, _image_row(rnd, _new_uuid(rnd), rnd.choice(_DATES)))
    looks.insert(position, orphan_look)
    rows[position]["_orphan"] = "1"
    return rows, looks


def _image_row(rnd: random.Random, product_id: str, date: str) -> dict[str, str]:
    """One Images.csv record; ``image_ref`` mimics the shape of the real 16-char tokens."""
    image_id = _new_uuid(rnd)
    alphabet = string.ascii_letters + string.digits
    head = "".join(rnd.choice(alphabet) for _ in range(4))
    tail = "".join(rnd.choice(alphabet) for _ in range(7))
    return {
        "id": image_id,
        "product_id": product_id,
        "bucket_link": f"{_BUCKET_URL}{image_id}.jpg",
        "image_ref": f"{head}AAOSw{tail}",
        "create_time": date,
    }


def _plan_images(
    rnd: random.Random, rows: list[dict[str, str]], looks: list[_ObjectLook]
) -> tuple[list[_ImageJob], dict[str, tuple[str, ...]]]:
    """Decide which rows get a fault or a special mode; one job per image row."""
    orphan_pos = next(i for i, row in enumerate(rows) if row.pop("_orphan", None))
    free = [i for i in range(len(rows)) if i != orphan_pos]
    rnd.shuffle(free)

    def take(n: int) -> list[int]:
        picked = sorted(free[:n])
        del free[:n]
        return picked

    n_special = max(1, round(_SPECIAL_MODE_FRACTION * len(rows)))
    kind_of: dict[int, str] = {}
    for kind, n in (
        ("missing", _N_MISSING_FILES),
        ("truncated", 1),
        ("text", 1),
        ("rgba_png", 1),
        ("L", n_special),
        ("CMYK", n_special),
        ("exif", n_special),
    ):
        for i in take(n):
            kind_of[i] = kind

    jobs = []
    for i, (row, look) in enumerate(zip(rows, looks, strict=True)):
        kind = kind_of.get(i, "rgb")
        orientation = rnd.choice((6, 8, 3)) if kind == "exif" else 1
        jobs.append(_ImageJob(row["id"], rnd.getrandbits(63), look, kind, orientation))

    faults = {
        kind: tuple(rows[i]["id"] for i in sorted(kind_of) if kind_of[i] == kind)
        for kind in ("missing", "truncated", "text")
    }
    faults["orphan"] = (rows[orphan_pos]["id"],)
    return jobs, faults


# --------------------------------------------------------------------------------------------
# Text of one product
# --------------------------------------------------------------------------------------------


def _make_product(
    rnd: random.Random, label_root: str, content_root: str, *, ambiguous: bool
) -> _Product:
    """One listing: text and look from ``content_root``, category column from ``label_root``."""
    product_id = _new_uuid(rnd)
    text = _TEXT[content_root]
    sub_name, leaves, nouns = rnd.choice(text.subs)
    category = _category_path(rnd, label_root, (sub_name, leaves, nouns), content_root)

    town, county = rnd.choice(_LOCATIONS)
    if rnd.random() < _SINGLE_PART_LOCATION_FRACTION:
        location = town = rnd.choice(_SINGLE_LOCATIONS)
    else:
        location = f"{town}, {county}"

    if rnd.random() < _BORROW_PROBABILITY:  # the item itself from a neighbouring root
        nouns = rnd.choice(_TEXT[rnd.choice(_NEIGHBOURS[content_root])].subs)[2]
    brand = rnd.choice(_SHARED_BRANDS if rnd.random() < _SHARED_BRAND_PROBABILITY else text.brands)
    noun = rnd.choice(_GENERIC_NOUNS if ambiguous else nouns)
    adjective = rnd.choice(text.adjectives)
    title = _title(rnd, content_root, noun, brand, adjective, ambiguous=ambiguous)

    price_value = _price_value(rnd, text.price_median)
    description = _description(
        rnd, title, category, town, content_root, noun, brand, price_value, ambiguous=ambiguous
    )
    return _Product(
        product_id=product_id,
        label_root=label_root,
        content_root=content_root,
        name=f"{title} | in {location} | Gumtree",
        category=category,
        description=description,
        price=f"£{price_value:,.2f}",
        location=location,
        look=_make_look(rnd, content_root),
    )


def _category_path(
    rnd: random.Random, label_root: str, content_sub: _Sub, content_root: str
) -> str:
    """``Root / Sub``, ``Root / Sub / Leaf`` or ``Root / Sub / Leaf / Private`` (1-3 levels)."""
    if label_root == content_root:
        sub_name, leaves, _ = content_sub
    else:
        sub_name, leaves, _ = rnd.choice(_TEXT[label_root].subs)
    parts = [label_root, sub_name]
    if leaves and rnd.random() < 0.85:
        parts.append(rnd.choice(leaves))
        if rnd.random() < 0.12:
            parts.append(rnd.choice(("Private", "Trade")))
    return CATEGORY_SEPARATOR.join(parts)


def _title(
    rnd: random.Random, root: str, noun: str, brand: str, adjective: str, *, ambiguous: bool
) -> str:
    """A listing title; a few contain `` | `` themselves, as some real ones do."""
    if not ambiguous and root in _PIPE_PREFIXES and rnd.random() < _PIPE_TITLE_FRACTION * 4:
        return f"{rnd.choice(_PIPE_PREFIXES[root])} | {rnd.choice(_PIPE_NAMES)}"
    if rnd.random() < _PIPE_TITLE_FRACTION / 2:
        return f"{noun.capitalize()} | {brand}"
    template = rnd.randrange(7)
    if template == 0:
        title = f"{brand} {noun}"
    elif template == 1:
        title = f"{adjective} {noun}"
    elif template == 2:
        title = f"{brand} {adjective} {noun}"
    elif template == 3:
        title = f"{noun} - {rnd.choice(_CONDITIONS).lower()}"
    elif template == 4:
        title = f"{noun} for sale"
    elif template == 5:
        title = f"{adjective} {brand} {noun} {rnd.choice(_NOISE_WORDS)}"
    else:
        title = f"{noun}"
    title = title[0].upper() + title[1:]
    if rnd.random() < 0.08:
        title = title.upper()
    elif rnd.random() < 0.02:
        title = f"{rnd.choice(_EMOJI)}{title}{rnd.choice(_EMOJI)}"
    return title


def _description(
    rnd: random.Random,
    title: str,
    category: str,
    town: str,
    root: str,
    noun: str,
    brand: str,
    price: float,
    *,
    ambiguous: bool,
) -> str:
    """A few sentences mixing root-specific, neighbouring, shared and noise vocabulary."""
    text = _TEXT[root]
    sentences: list[str] = []
    if rnd.random() < 0.3:
        # Gumtree's own stub: "<title>. Posted by <name> in <sub-categories> in <town>. <date>"
        path = ", ".join(category.split(CATEGORY_SEPARATOR)[1:])
        day = rnd.choice((24, 25, 26, 27))
        sentences.append(
            f"{title}. Posted by {rnd.choice(_FIRST_NAMES)} in {path} in {town}. "
            f"{day} February 2022"
        )
    else:
        sentences.append(f"Selling my {rnd.choice(text.adjectives)} {brand} {noun}")
    sentences.append(rnd.choice(_CONDITIONS))
    if not ambiguous:
        for _ in range(rnd.randint(0, 3)):
            source = text
            if rnd.random() < _BORROW_PROBABILITY:
                source = _TEXT[rnd.choice(_NEIGHBOURS[root])]
            sentence = rnd.choice(source.sentences)
            if sentence not in sentences:
                sentences.append(sentence)
    n_logistics = rnd.randint(0, 2)
    sentences.extend(s.format(town=town) for s in rnd.sample(_LOGISTICS, n_logistics))
    extra = rnd.random()
    if extra < 0.25:
        paid = max(5, round(price * rnd.uniform(1.5, 3.0)))
        sentences.append(f"Paid £{paid:,} new, asking £{max(1, round(price)):,} ono")
    elif extra < 0.4:
        sentences.append(f'Comes with "{rnd.choice(_ACCESSORIES)}", see photos')
    elif extra < 0.5:
        sentences.append(f"Any questions, just ask, {rnd.choice(_NOISE_WORDS)}")
    if rnd.random() < 0.3:
        sentences.append(" ".join(rnd.sample(_NOISE_WORDS, rnd.randint(1, 3))))
    sentences = [s if s.endswith(("!", "?", ".")) else s + "." for s in sentences]

    if rnd.random() < _CR_FRACTION and len(sentences) > 1:
        # Bare "\r" between some sentences, as in the real export (never "\r\n").
        joined = sentences[0]
        forced = rnd.randrange(1, len(sentences))
        for k, sentence in enumerate(sentences[1:], start=1):
            joined += ("\r" if k == forced or rnd.random() < 0.4 else " ") + sentence
        return joined
    return " ".join(sentences)


def _price_value(rnd: random.Random, median: float) -> float:
    """Log-normal price around the root's median, rounded as sellers do; a few are £0."""
    if rnd.random() < _ZERO_PRICE_FRACTION:
        return 0.0
    value = median * math.exp(rnd.gauss(0.0, 1.15))
    if rnd.random() < 0.003:
        value *= 200  # the real export has absurd outliers too
    if value < 10:
        return max(1.0, round(value)) - rnd.choice((0.0, 0.0, 0.01, 0.5))
    if value < 200:
        return float(round(value))
    if value < 2000:
        return float(round(value / 5) * 5)
    return float(round(value / 50) * 50)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _hsv(hue_deg: float, sat: float, val: float) -> tuple[int, int, int]:
    """HSV (degrees, 0-1, 0-1) to an RGB byte triple."""
    r, g, b = colorsys.hsv_to_rgb(
        (hue_deg % 360.0) / 360.0, min(max(sat, 0.0), 1.0), min(max(val, 0.0), 1.0)
    )
    return round(r * 255), round(g * 255), round(b * 255)


def _make_look(rnd: random.Random, root: str) -> _ObjectLook:
    """A product's object: mostly its root's look, with each attribute sometimes swapped."""
    look = _LOOKS[root]
    p = _ATTRIBUTE_SWAP_PROBABILITY
    shape = rnd.choice(_SHAPES if rnd.random() < p else look.shapes)
    pattern = rnd.choice(_PATTERNS if rnd.random() < p else look.patterns)
    if rnd.random() < p:
        hue, sat = rnd.uniform(0, 360), rnd.uniform(0.1, 1.0)
    else:
        hue = look.hue + rnd.gauss(0.0, _HUE_JITTER_DEG)
        sat = rnd.uniform(*look.sat)
    val = rnd.uniform(0.45, 0.95)
    colour = _hsv(hue, sat, val)
    if pattern == "gradient":
        colour2 = _hsv(hue + rnd.uniform(25, 60), sat, val * 0.55)
    elif rnd.random() < 0.5:
        colour2 = _hsv(hue, sat * 0.4, min(1.0, val + 0.35))
    else:
        colour2 = _hsv(hue + rnd.uniform(-15, 15), sat, val * 0.45)
    aspect = math.exp(rnd.uniform(math.log(look.aspect[0]), math.log(look.aspect[1])))
    return _ObjectLook(shape, pattern, colour, colour2, aspect)


def _unit_shape(shape: str) -> list[tuple[list[tuple[float, float]], int]]:
    """Polygons in [-1, 1]^2 with the mask value to fill (0 cuts a hole)."""

    def circle(r: float, n: int = 36) -> list[tuple[float, float]]:
        return [
            (r * math.cos(2 * math.pi * k / n), r * math.sin(2 * math.pi * k / n)) for k in range(n)
        ]

    if shape == "rect":
        return [([(-1, -1), (1, -1), (1, 1), (-1, 1)], 255)]
    if shape == "roundrect":
        pts: list[tuple[float, float]] = []
        r = 0.35
        for cx, cy, start in (
            (1 - r, 1 - r, 0),
            (-1 + r, 1 - r, 90),
            (-1 + r, -1 + r, 180),
            (1 - r, -1 + r, 270),
        ):
            for k in range(6):
                a = math.radians(start + 90 * k / 5)
                pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return [(pts, 255)]
    if shape == "ellipse":
        return [(circle(1.0), 255)]
    if shape == "ring":
        return [(circle(1.0), 255), (circle(0.55), 0)]
    if shape == "triangle":
        return [([(0, -1), (1, 0.9), (-1, 0.9)], 255)]
    if shape == "hexagon":
        return [(circle(1.0, 6), 255)]
    if shape == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + math.pi * k / 5
            r = 1.0 if k % 2 == 0 else 0.45
            pts.append((r * math.cos(a), r * math.sin(a)))
        return [(pts, 255)]
    if shape == "cross":
        w = 0.35
        arm = [(-w, -1.0), (w, -1.0), (w, -w)]  # one arm; the others are it turned by 90°
        pts = []
        for _ in range(4):
            pts.extend(arm)
            arm = [(-y, x) for x, y in arm]
        return [(pts, 255)]
    raise ValueError(f"unknown shape {shape!r}")


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle: float,
    fill: int | tuple[int, ...],
) -> None:
    """Draw ``shape`` scaled by (rx, ry), rotated by ``angle`` and centred at (cx, cy).

    Holes (the ring's) are cut with 0 on a mask; on a picture a ring is drawn as a thick
    outline instead, so no mask is needed there.
    """
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    polygons = _unit_shape(shape)
    for poly, value in polygons:
        pts = [
            (cx + ux * rx * cos_a - uy * ry * sin_a, cy + ux * rx * sin_a + uy * ry * cos_a)
            for ux, uy in poly
        ]
        if isinstance(fill, int):
            draw.polygon(pts, fill=fill if value else 0)
        elif len(polygons) == 1:
            draw.polygon(pts, fill=fill)
        elif value:  # ring on a picture: outline as thick as the ring
            draw.polygon(pts, outline=fill, width=max(1, round(0.45 * min(rx, ry))))


def _pattern(
    look: _ObjectLook,
    box: tuple[int, int, int, int],
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle: float,
    n: int,
) -> np.ndarray:
    """The object's fill over ``box`` (x0, y0, x1, y1) as an RGB uint8 array.

    Computed in object coordinates (u, v in [-1, 1]) so stripes and checks turn with the
    object; each pixel gets a palette index, which is cheaper than blending colour arrays.
    """
    x0, y0, x1, y1 = box
    xs = np.arange(x0, x1, dtype=np.float32) - np.float32(cx)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    cos_a, sin_a = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    half_n = np.float32(n / 2)
    c1 = np.array(look.colour, dtype=np.float32)
    c2 = np.array(look.colour2, dtype=np.float32)
    v = (ys * cos_a - xs * sin_a) * np.float32(1 / ry)
    if look.pattern in ("gradient", "solid"):
        levels = 32
        t = np.linspace(0.0, 1.0, levels, dtype=np.float32)[:, None]
        # gradient: blend to the second colour; solid: one colour, lit from above
        palette = c1 * (1 - t) + c2 * t if look.pattern == "gradient" else c1 * (1.1 - 0.3 * t)
        index = np.clip((v + 1) * np.float32((levels - 1) / 2), 0, levels - 1).astype(np.intp)
    else:
        palette = np.stack([c1, c2])
        u = (xs * cos_a + ys * sin_a) * np.float32(1 / rx)
        if look.pattern == "hstripes":
            index = np.floor((v + 1) * half_n).astype(np.intp) % 2
        elif look.pattern == "vstripes":
            index = np.floor((u + 1) * half_n).astype(np.intp) % 2
        elif look.pattern == "checker":
            index = (np.floor((u + 1) * half_n) + np.floor((v + 1) * half_n)).astype(np.intp) % 2
        else:  # dots
            fu = ((u + 1) * half_n) % 1 - np.float32(0.5)
            fv = ((v + 1) * half_n) % 1 - np.float32(0.5)
            index = (fu * fu + fv * fv < np.float32(0.09)).astype(np.intp)
        index = np.broadcast_to(index, (y1 - y0, x1 - x0))
    palette_u8 = np.clip(palette, 0, 255).astype(np.uint8)
    return palette_u8[np.broadcast_to(index, (y1 - y0, x1 - x0))]


def _image_size(rnd: random.Random) -> tuple[int, int]:
    """Sides ~60-640 px; mostly near-square, some up to 1:3 or 3:1."""
    long_side = round(math.exp(rnd.uniform(math.log(110), math.log(640))))
    if rnd.random() < 0.6:
        ratio = math.exp(rnd.uniform(math.log(0.75), math.log(1.34)))
    else:
        ratio = math.exp(rnd.uniform(math.log(1 / 3), math.log(3)))
    short_side = max(60, round(long_side / max(ratio, 1 / ratio)))
    return (long_side, short_side) if ratio >= 1 else (short_side, long_side)


def _render(job: _ImageJob) -> tuple[Image.Image, Image.Image]:
    """Draw one photo of the job's object; returns (RGB picture, object mask).

    Whole-image work stays in PIL's C code (fills, polygons, resize, ImageChops.add); numpy
    only fills the object's bounding box and the coarse noise grid, which keeps the default
    sample well under the time budget.
    """
    rnd = random.Random(job.seed)
    nrng = np.random.default_rng(job.seed)
    w, h = _image_size(rnd)
    side = min(w, h)

    # Background: a mostly neutral wall, sometimes a floor/table line, sometimes vivid.
    if rnd.random() < 0.15:
        base = _hsv(rnd.uniform(0, 360), rnd.uniform(0.3, 0.8), rnd.uniform(0.4, 0.9))
    else:
        base = _hsv(rnd.uniform(0, 360), rnd.uniform(0.0, 0.2), rnd.uniform(0.55, 0.97))
    canvas = Image.new("RGB", (w, h), base)
    draw = ImageDraw.Draw(canvas)
    if rnd.random() < 0.5:
        floor = _hsv(rnd.uniform(0, 360), rnd.uniform(0.0, 0.4), rnd.uniform(0.3, 0.8))
        draw.rectangle((0, round(h * rnd.uniform(0.55, 0.85)), w, h), fill=floor)
    # Lighting gradient and low-frequency blotches, on a coarse grid upscaled by PIL.
    gh, gw = h // 24 + 2, w // 24 + 2
    coarse = nrng.normal(128.0, rnd.uniform(3, 14), size=(gh, gw, 3))
    coarse += rnd.uniform(-25, 25) * np.linspace(-1, 1, gh)[:, None, None]
    blotch = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BILINEAR
    )
    canvas = ImageChops.add(canvas, blotch, offset=-128)
    draw = ImageDraw.Draw(canvas)

    def clutter() -> None:
        """A small random shape in a random colour: something else lying around."""
        shape = rnd.choice(_SHAPES)
        r = side * rnd.uniform(0.05, 0.16)
        colour = _hsv(rnd.uniform(0, 360), rnd.uniform(0.1, 0.9), rnd.uniform(0.25, 0.95))
        _draw_shape(
            draw,
            shape,
            rnd.uniform(0, w),
            rnd.uniform(0, h),
            r * rnd.uniform(0.6, 1.4),
            r,
            rnd.uniform(0, math.pi),
            colour,
        )

    for _ in range(rnd.randint(0, 4)):
        clutter()

    # The object: random scale and position (may be slightly cropped), small tilt.
    size = side * rnd.uniform(0.28, 0.42)
    rx, ry = size * math.sqrt(job.look.aspect), size / math.sqrt(job.look.aspect)
    scale = min(1.0, 0.48 * w / rx, 0.48 * h / ry)
    rx, ry = rx * scale, ry * scale
    cx = rnd.uniform(min(rx * 0.85, w / 2), max(w - rx * 0.85, w / 2))
    cy = rnd.uniform(min(ry * 0.85, h / 2), max(h - ry * 0.85, h / 2))
    angle = math.radians(rnd.gauss(0, 10))
    if rnd.random() < 0.5:  # shadow below
        shadow = tuple(max(0, c - 50) for c in base)
        draw.ellipse((cx - rx, cy + ry * 0.7, cx + rx, cy + ry * 1.15), fill=shadow)
    mask = Image.new("L", (w, h), 0)
    _draw_shape(ImageDraw.Draw(mask), job.look.shape, cx, cy, rx, ry, angle, 255)
    box = mask.getbbox()
    if box is not None:
        fill = _pattern(job.look, box, cx, cy, rx, ry, angle, rnd.randint(3, 7))
        canvas.paste(Image.fromarray(fill), box[:2], mask.crop(box))

    for _ in range(rnd.choice((0, 0, 0, 1))):  # something in front, now and then
        clutter()

    # Fine sensor noise (uniform, grey), weak so files stay small.
    amplitude = rnd.randint(0, 5)
    if amplitude:
        grain = nrng.integers(128 - amplitude, 129 + amplitude, size=(h, w), dtype=np.uint8)
        grain_img = Image.fromarray(grain)
        canvas = ImageChops.add(canvas, Image.merge("RGB", (grain_img,) * 3), offset=-128)
    return canvas, mask


def _jpeg_bytes(img: Image.Image, **extra: object) -> bytes:
    """Encode as JPEG at the export's quality (deterministic for identical pixels)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=_JPEG_QUALITY, **extra)
    return buf.getvalue()


def _write_image(images_dir: Path, job: _ImageJob) -> None:
    """Write the file for one image row according to its kind (or nothing, if missing)."""
    if job.kind == "missing":
        return
    path = images_dir / f"{job.image_id}.jpg"
    if job.kind == "text":
        path.write_bytes(_NOT_AN_IMAGE_TEXT.encode("ascii"))
        return
    picture, mask = _render(job)
    if job.kind == "rgba_png":
        rgba = picture.convert("RGBA")
        rgba.putalpha(mask)  # only the object is opaque: real transparency
        buf = io.BytesIO()
        rgba.save(buf, format="PNG")
        (images_dir / f"{job.image_id}.png").write_bytes(buf.getvalue())
        return
    if job.kind == "L":
        data = _jpeg_bytes(picture.convert("L"))
    elif job.kind == "CMYK":
        data = _jpeg_bytes(picture.convert("CMYK"))
    elif job.kind == "exif":
        exif = Image.Exif()
        exif[_EXIF_ORIENTATION_TAG] = job.orientation
        stored = picture.transpose(_STORE_ROTATED[job.orientation])
        data = _jpeg_bytes(stored, exif=exif.tobytes())
    else:
        data = _jpeg_bytes(picture)
    if job.kind == "truncated":
        data = data[: len(data) // 2]
    path.write_bytes(data)


# The command line ------------------------------------------------------------
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="marketplace sample",
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
