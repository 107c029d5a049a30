"""A smoke run of embedding and training on a small stratified subset of the real export."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketplace.core.config import load_params
from marketplace.data.images import clean_export_images
from marketplace.data.split import split_products
from marketplace.data.tabular import clean_tables
from marketplace.features.embedding import stream_catalogue_images, stream_catalogue_texts
from marketplace.features.tfidf import TfidfConfig
from marketplace.training.inputs import build_text_features, products_table
from marketplace.training.train import train_classifier
from tests.helpers import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

PER_CATEGORY = 24


def test_three_classifiers_learn_on_a_real_subset(real_export: Path, tmp_path: Path) -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    tables = clean_tables(real_export, params.clean_tabular)
    listings = tables.listings
    with_photo = set(listings.dropna(subset=["image_id"])["product_id"])
    products = (
        listings[listings["product_id"].isin(with_photo)]
        .drop_duplicates("product_id")
        .groupby("root_category", group_keys=False)
        .apply(lambda g: g.sample(n=min(PER_CATEGORY, len(g)), random_state=0))
    )
    subset = listings[listings["product_id"].isin(set(products["product_id"]))]
    export = tmp_path / "export"
    export.mkdir()
    (export / "images").symlink_to(real_export / "images")
    subset[["image_id", "product_id", "image_ref", "image_created"]].dropna().rename(
        columns={"image_id": "id", "image_created": "create_time"}
    ).assign(bucket_link="").to_csv(export / "Images.csv")
    report, _ = clean_export_images(
        export, tmp_path / "clean", size=256, jpeg_quality=90, workers=2, progress=False
    )
    assert (report["status"] != "not_an_image").all()
    images = stream_catalogue_images(
        tmp_path / "clean", params.embed_images, canvas_size=256, progress=False
    ).collect()
    texts = stream_catalogue_texts(subset, params.embed_text, progress=False).collect()
    splits = split_products(subset, seed=0, val_fraction=0.2, test_fraction=0.2)
    features = build_text_features(
        products_table(subset),
        TfidfConfig(params.tfidf.word_buckets, params.tfidf.char_buckets),
        splits,
    )
    chance = 1 / 13
    for kind, floor in (("vision", 2 * chance), ("text", 4 * chance), ("combined", 4 * chance)):
        trained = train_classifier(
            kind,
            subset,
            splits,
            tables.label_map,
            params.train,
            images=images,
            texts=texts,
            text_features=features,
        )
        assert trained.metrics["test_accuracy"] > floor, (kind, trained.metrics)
