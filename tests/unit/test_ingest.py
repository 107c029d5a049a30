"""Importing an export: folders and zips accepted, malformed exports refused, data/ intact."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from marketplace.data.export import MalformedExportError
from marketplace.data.ingest import ingest_export

PRODUCTS = (
    ",id,product_name,category,product_description,price,location\n"
    '0,p1,"Kettle | in Leeds, West Yorkshire | Gumtree",Appliances,Nice,£5.00,"Leeds, W"\n'
)
IMAGES = ",id,product_id,bucket_link,image_ref,create_time\n0,i1,p1,link,ref,2022-02-26\n"


def _export(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "Products.csv").write_text(PRODUCTS)
    (root / "Images.csv").write_text(IMAGES)
    (root / "images" / "i1.jpg").write_bytes(b"\xff\xd8fake")
    (root / "SOURCE.md").write_text("notes that are not part of the export")
    return root


def _zip(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def test_folder_import_copies_only_the_export(tmp_path: Path) -> None:
    data = tmp_path / "project" / "data"
    summary = ingest_export(_export(tmp_path / "export"), data)
    assert (summary.products, summary.image_rows, summary.image_files) == (1, 1, 1)
    assert sorted(p.name for p in data.iterdir()) == ["Images.csv", "Products.csv", "images"]
    assert (data / "Products.csv").read_text() == PRODUCTS


@pytest.mark.parametrize("prefix", ["", "export-2022/"])
def test_zip_import_with_or_without_a_top_folder(tmp_path: Path, prefix: str) -> None:
    archive = _zip(_export(tmp_path / "export"), tmp_path / "export.zip", prefix)
    data = tmp_path / "data"
    ingest_export(archive, data)
    assert (data / "images" / "i1.jpg").read_bytes() == b"\xff\xd8fake"


def test_reimport_replaces_previous_export(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ingest_export(_export(tmp_path / "one"), data)
    second = _export(tmp_path / "two")
    (second / "images" / "i1.jpg").unlink()
    (second / "images" / "i2.jpg").write_bytes(b"x")
    ingest_export(second, data)
    assert sorted(p.name for p in (data / "images").iterdir()) == ["i2.jpg"]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda root: (root / "Images.csv").unlink(), "Images.csv is missing"),
        (
            lambda root: (root / "images" / "i1.jpg").unlink() or (root / "images").rmdir(),
            "images/ folder is missing",
        ),
        (lambda root: (root / "Products.csv").write_text(",id,name\n0,p1,x\n"), "missing column"),
        (
            lambda root: (root / "Products.csv").write_text(PRODUCTS.splitlines()[0] + "\n"),
            "no product records",
        ),
        (lambda root: (root / "Products.csv").write_bytes(b"\xff\xfe\x00bad"), "not UTF-8"),
    ],
)
def test_malformed_export_is_refused_and_data_untouched(tmp_path: Path, breakage, message) -> None:
    data = tmp_path / "data"
    ingest_export(_export(tmp_path / "good"), data)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    bad = _export(tmp_path / "bad")
    breakage(bad)
    with pytest.raises(MalformedExportError, match=message):
        ingest_export(bad, data)
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    assert not list(tmp_path.glob(".ingest-*")), "temporary folders are cleaned up"


def test_unsafe_or_invalid_archives_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(MalformedExportError, match="unsafe path"):
        ingest_export(evil, tmp_path / "data")
    assert not (tmp_path.parent / "escape.txt").exists()
    not_zip = tmp_path / "export.txt"
    not_zip.write_text("hello")
    with pytest.raises(MalformedExportError, match=r"folder or a \.zip"):
        ingest_export(not_zip, tmp_path / "data")
    with pytest.raises(MalformedExportError, match="does not exist"):
        ingest_export(tmp_path / "nowhere", tmp_path / "data")


def test_ambiguous_archive_is_refused(tmp_path: Path) -> None:
    _export(tmp_path / "both" / "a")
    _export(tmp_path / "both" / "b")
    with pytest.raises(MalformedExportError, match="several exports"):
        ingest_export(_zip(tmp_path / "both", tmp_path / "both.zip"), tmp_path / "data")
