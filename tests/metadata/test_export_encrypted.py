"""The identified metadata export encrypted at rest under the restricted key: parts and
manifest readable with the key only, the same rows as a clear export, idempotent reruns,
and the embedded warehouse loading clear and encrypted parts alike. Inputs: pydicom's own
test files (not our generator)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from dicom_deid.duckdb_crypto import is_encrypted_parquet, read_encrypted_parquet
from dicom_deid.errors import KeyConfigError
from dicom_deid.metadata.export import ExportState, export_metadata
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse
from dicom_deid.warehouse.restricted_file import RESTRICTED_KEY_ENV, load_restricted_key

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
DAY = date(2026, 3, 10)
COLUMNS = ["source_uri", "content_sha256", "PatientID", "StudyInstanceUID", "SOPInstanceUID"]


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pydicom's test files with a patient ID and a study UID (copied: mtimes of our own)."""
    out = tmp_path_factory.mktemp("landing")
    for path in sorted(PYDICOM_FILES.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if len(str(ds.get("PatientID", "") or "")) >= 4 and ds.get("StudyInstanceUID"):
            shutil.copy(path, out / path.name)
    # the truncated ones are listed as errors by any export: not what these tests are about
    probe = export_metadata(sorted(out.iterdir()), tmp_path_factory.mktemp("probe"),
                            run_id="p", ingest_date=DAY, workers=1)
    for uri, _ in probe.errors:
        Path(uri).unlink()
    assert len(list(out.iterdir())) >= 10
    return out


def _identifiers(landing: Path) -> set[bytes]:
    out = set()
    for path in landing.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for kw in ("PatientID", "StudyInstanceUID", "SOPInstanceUID"):
            value = str(ds.get(kw, "") or "")
            if len(value) >= 6:
                out.add(value.encode())
    out.add(landing.name.encode())  # the landing paths in source_uri
    return out


def _rows(table: object) -> list[tuple[object, ...]]:
    rows = table.select(COLUMNS).to_pylist()  # type: ignore[attr-defined]
    return sorted(tuple(r[c] for c in COLUMNS) for r in rows)


def test_parts_and_manifest_hold_nothing_readable_without_the_key(
        landing: Path, tmp_path: Path) -> None:
    key = load_restricted_key()
    assert key is not None
    sealed = export_metadata(sorted(landing.iterdir()), tmp_path / "sealed", run_id="r1",
                             ingest_date=DAY, workers=1, key=key)
    clear = export_metadata(sorted(landing.iterdir()), tmp_path / "clear", run_id="r1",
                            ingest_date=DAY, workers=1)
    assert sealed.exported == clear.exported > 0 and sealed.parts
    originals = _identifiers(landing)
    written = [p for p in (tmp_path / "sealed").rglob("*") if p.is_file()]
    assert any(p.name == "exported.manifest" for p in written)
    for path in written:
        assert is_encrypted_parquet(path), path.name
        data = path.read_bytes()
        assert not [v for v in originals if v in data], path.name
        with pytest.raises(OSError, match="encrypted"):
            pq.ParquetFile(path).read()
    # the key gives the very rows a clear export has
    got = [r for p in sealed.parts for r in _rows(read_encrypted_parquet(p, key))]
    want = [r for p in clear.parts for r in _rows(pq.read_table(p))]
    assert sorted(got) == sorted(want)
    with pytest.raises(KeyConfigError, match="does not open"):
        read_encrypted_parquet(sealed.parts[0], bytes(range(1, 33)))


def test_reruns_read_the_encrypted_manifest_and_export_nothing_again(
        landing: Path, tmp_path: Path) -> None:
    key = load_restricted_key()
    out = tmp_path / "x"
    first = export_metadata(sorted(landing.iterdir()), out, run_id="r1", ingest_date=DAY,
                            workers=1, key=key)
    manifest = (out / "_state" / "exported.manifest").stat()
    again = export_metadata(sorted(landing.iterdir()), out, run_id="r2", ingest_date=DAY,
                            workers=1, key=key)
    assert first.exported > 0 and again.exported == 0 and not again.parts
    # Nothing new: the manifest (every file ever exported, encrypted) is not written again.
    after = (out / "_state" / "exported.manifest").stat()
    assert (after.st_ino, after.st_mtime_ns) == (manifest.st_ino, manifest.st_mtime_ns)
    assert again.skipped_unchanged == first.exported
    with pytest.raises(KeyConfigError, match="restricted key"):
        ExportState.for_export(out)  # the manifest lists landing paths: key only


def test_a_clear_manifest_is_encrypted_by_the_next_run_with_a_key(
        landing: Path, tmp_path: Path) -> None:
    key = load_restricted_key()
    out = tmp_path / "x"
    files = sorted(landing.iterdir())
    export_metadata(files[:5], out, run_id="r1", ingest_date=DAY, workers=1)
    manifest = out / "_state" / "exported.manifest"
    assert not is_encrypted_parquet(manifest)
    more = export_metadata(files, out, run_id="r2", ingest_date=DAY, workers=1, key=key)
    assert more.exported == len(files) - 5
    assert is_encrypted_parquet(manifest) and len(ExportState.for_export(out, key)) == len(files)


def test_a_clear_manifest_is_encrypted_by_a_run_with_a_key_that_finds_nothing_new(
        landing: Path, tmp_path: Path) -> None:
    key = load_restricted_key()
    out = tmp_path / "x"
    files = sorted(landing.iterdir())
    export_metadata(files, out, run_id="r1", ingest_date=DAY, workers=1)
    again = export_metadata(files, out, run_id="r2", ingest_date=DAY, workers=1, key=key)
    assert again.exported == 0
    assert is_encrypted_parquet(out / "_state" / "exported.manifest")
    assert len(ExportState.for_export(out, key)) == len(files)


def test_the_warehouse_loads_clear_and_encrypted_parts_together(
        landing: Path, tmp_path: Path) -> None:
    key = load_restricted_key()
    files = sorted(landing.iterdir())
    old = export_metadata(files[:5], tmp_path / "old", run_id="r1", ingest_date=DAY, workers=1)
    new = export_metadata(files[5:], tmp_path / "new", run_id="r2", ingest_date=DAY,
                          workers=1, key=key)
    with DuckDBWarehouse(tmp_path / "w.duckdb") as wh:
        wh.ensure_schema()
        n = wh.load_parquet("dicom_metadata", [str(p) for p in old.parts + new.parts],
                            mode="merge")
        uris = wh.query("SELECT source_uri FROM dicom_metadata").column(0).to_pylist()
    assert n == len(files) and sorted(uris) == sorted(str(f) for f in files)


def test_the_command_line_encrypts_for_the_embedded_warehouse_only(
        landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = str(Path(sys.executable).parent / "dicom-deid")
    wh = f"duckdb://{tmp_path / 'w.duckdb'}"
    done = subprocess.run([cli, "export-metadata", str(landing), "--out", str(tmp_path / "a"),
                           "--warehouse", wh], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    parts = list((tmp_path / "a").glob("ingest_date=*/*.parquet"))
    assert parts and all(is_encrypted_parquet(p) for p in parts)
    monkeypatch.delenv(RESTRICTED_KEY_ENV)
    # no key: a load into the embedded warehouse is refused before anything is written
    refused = subprocess.run([cli, "export-metadata", str(landing), "--out",
                              str(tmp_path / "b"), "--warehouse", wh],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "DICOM_DEID_RESTRICTED_KEY" in refused.stderr
    assert not (tmp_path / "b").exists()
    # ... and Parquet only, asked for, is written in clear
    plain = subprocess.run([cli, "export-metadata", str(landing), "--out",
                            str(tmp_path / "c"), "--no-load"], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    parts = list((tmp_path / "c").glob("ingest_date=*/*.parquet"))
    assert parts and not any(is_encrypted_parquet(p) for p in parts)
