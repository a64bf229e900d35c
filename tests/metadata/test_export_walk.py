"""The export walks a landing folder as ``deidentify`` does (one rule): symbolic links are
not followed and special files never opened, each listed with its reason; a name that is
not UTF-8 is exported, its ``source_uri`` the escaped text of its path."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dicom_deid.deid.batch import iter_sources
from dicom_deid.metadata.export import ExportState, export_metadata
from instances import ROOT, make_instance, to_bytes

DAY = date(2026, 12, 1)


def _instance(i: int) -> bytes:
    ds = make_instance()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}8.{i}"
    return to_bytes(ds)




@pytest.fixture
def landing(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "DOE_JANE").mkdir(parents=True)
    (src / "DOE_JANE" / "a.dcm").write_bytes(_instance(1))
    with open(os.path.join(os.fsencode(src), b"ok\xff\xfe.dcm"), "wb") as fh:
        fh.write(_instance(2))
    (tmp_path / "elsewhere.dcm").write_bytes(_instance(3))
    (src / "link.dcm").symlink_to(tmp_path / "elsewhere.dcm")
    (src / "L1").symlink_to("L2")
    (src / "L2").symlink_to("L1")
    os.mkfifo(src / "fifo.dcm")
    return src


def test_the_export_lists_links_and_special_files_and_exports_the_rest(
        landing: Path, tmp_path: Path, no_hang: None) -> None:
    out = tmp_path / "meta"
    summary = export_metadata((s.path for s in iter_sources(landing)), out, run_id="r1",
                              ingest_date=DAY, workers=1)
    root = str(landing)
    assert summary.exported == 2
    assert sorted(summary.errors) == [
        (f"{root}/L1", "symbolic link loop (links are not followed)"),
        (f"{root}/L2", "symbolic link loop (links are not followed)"),
        (f"{root}/fifo.dcm", "not a regular file (FIFO)"),
        (f"{root}/link.dcm", "symbolic link to a file (links are not followed)"),
    ]
    uris = sorted(u for part in summary.parts
                  for u in pq.ParquetFile(part).read().column("source_uri").to_pylist())
    assert uris == [f"{root}/DOE_JANE/a.dcm", f"{root}/ok\\xff\\xfe.dcm"]
    # the manifest (Parquet) holds the escaped text too: a rerun finds nothing new
    assert f"{root}/ok\\xff\\xfe.dcm" in ExportState.for_export(out).entries
    again = export_metadata((s.path for s in iter_sources(landing)), out, run_id="r2",
                            ingest_date=DAY, workers=1)
    assert (again.exported, again.skipped_unchanged, len(again.errors)) == (0, 2, 4)


def test_a_fifo_named_to_the_export_is_listed_not_opened(tmp_path: Path,
                                                         no_hang: None) -> None:
    """A list of paths (the pipeline's), one of them a FIFO or a link: never opened."""
    good, fifo, link = tmp_path / "a.dcm", tmp_path / "b.dcm", tmp_path / "c.dcm"
    good.write_bytes(_instance(1))
    os.mkfifo(fifo)
    link.symlink_to(good)
    summary = export_metadata([good, fifo, link, "/dev/null"], tmp_path / "meta",
                              run_id="r1", ingest_date=DAY, workers=1)
    assert summary.exported == 1
    assert dict(summary.errors) == {
        "/dev/null": "not a regular file (character device)",
        str(fifo): "not a regular file (FIFO)",
        str(link): "symbolic link to a file (links are not followed)"}


def test_a_folder_the_walk_could_not_list_is_listed_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk hands the export the folder's path (the export gets paths only): the
    export says why it is no file, as the walk did."""
    (tmp_path / "in" / "DOE_JANE").mkdir(parents=True)
    (tmp_path / "in" / "a.dcm").write_bytes(_instance(1))
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if str(path).endswith("DOE_JANE"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    sources = [s.path for s in iter_sources(tmp_path / "in")]
    summary = export_metadata(sources, tmp_path / "meta", run_id="r1", ingest_date=DAY,
                              workers=1)
    assert summary.exported == 1
    assert summary.errors == [(f"{tmp_path}/in/DOE_JANE",
                               "cannot list folder: Permission denied")]
