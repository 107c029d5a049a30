"""The project's file layout: where raw data lives and where each stage writes.

``dvc.yaml`` declares the same paths as stage deps and outs; the stage modules use these
as their argument defaults, so running a module by hand writes where DVC expects.
Paths are relative to the project root (DVC runs every stage from there).
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path("data")  # raw export only: immutable, tracked by data.dvc
OUTPUTS_DIR = Path("outputs")  # every derived file: DVC stage outs
METRICS_DIR = Path("metrics")  # small JSON metrics (DVC metrics, kept in git)
REPORTS_DIR = Path("reports")  # per-row problem reports (DVC outs)

CLEAN_DIR = OUTPUTS_DIR / "clean"
LISTINGS_FILE = CLEAN_DIR / "listings.parquet"
LABEL_MAP_FILE = CLEAN_DIR / "label_map.json"
CLEAN_IMAGES_DIR = OUTPUTS_DIR / "images"
SPLIT_DIR = OUTPUTS_DIR / "split"
EMBEDDINGS_DIR = OUTPUTS_DIR / "embeddings"
IMAGE_EMBEDDINGS_FILE = EMBEDDINGS_DIR / "images.npz"
TEXT_EMBEDDINGS_FILE = EMBEDDINGS_DIR / "text.npz"
TFIDF_FILE = OUTPUTS_DIR / "features" / "tfidf.npz"  # hashed TF-IDF rows per split
MODELS_DIR = OUTPUTS_DIR / "models"  # one classifier folder per kind
PLOTS_DIR = Path("plots")  # per-kind curves and confusion matrices (DVC plots)
INDEX_DIR = OUTPUTS_DIR / "index"  # FAISS index + product records (also in the registry)
THUMBNAILS_DIR = OUTPUTS_DIR / "thumbnails"  # listing photos, copied into the index folder
