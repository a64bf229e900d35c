"""What a night's metadata export selects: every landing file not exported yet that was
modified before the interval's end (late arrivals and mtime-preserving copies included),
each exported once across nights and backfills unless its content changes."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydicom.data import get_testdata_file

from dicom_deid.duckdb_crypto import read_encrypted_parquet
from dicom_deid.pipeline.interval_export import (
    IntervalExport,
    export_interval,
    interval_run_id,
    load_export,
)
from dicom_deid.pipeline.settings import PipelineSettings
from dicom_deid.warehouse.factory import open_warehouse
from dicom_deid.warehouse.restricted_file import load_restricted_key
from instances import make_instance, to_bytes

DAY1 = datetime(2026, 5, 1, tzinfo=UTC)
TABLE = "dicom_metadata"


def _day(k: int) -> tuple[datetime, datetime]:
    return DAY1 + timedelta(days=k), DAY1 + timedelta(days=k + 1)


def _instance(n: int, name: str = "Doe^Jane") -> bytes:
    ds = make_instance(name=f"{name}{n}")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.10.9.{n}"
    return to_bytes(ds)


def _land(path: Path, moment: datetime, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (moment.timestamp(), moment.timestamp()))
    return path


@pytest.fixture
def settings(tmp_path: Path) -> PipelineSettings:
    return PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": str(tmp_path),
                                      "DICOM_DEID_LANDING": str(tmp_path / "landing"),
                                      "DICOM_DEID_WORKERS": "1"})


def _night(settings: PipelineSettings, k: int) -> IntervalExport:
    """Export and load interval ``k`` (days after DAY1), as the export DAG does."""
    result = export_interval(settings, *_day(k))
    assert result.run_id == interval_run_id(*_day(k))
    assert result.listed == result.exported + result.unchanged + result.failed
    load_export(settings.warehouse, settings.metadata_dir / TABLE, result.run_id, TABLE)
    return result


def _parquet_rows(settings: PipelineSettings) -> list[tuple[str, str, str]]:
    """(file name, run id, ingest date) of every row in every Parquet part written (each
    encrypted under the restricted key: the identified catalog at rest)."""
    rows: list[tuple[str, str, str]] = []
    key = load_restricted_key()
    assert key is not None
    for part in sorted((settings.metadata_dir / TABLE).glob("ingest_date=*/part-*.parquet")):
        with pytest.raises(OSError, match="encrypted"):
            pq.ParquetFile(part).read()
        table = read_encrypted_parquet(part, key).select(
            ["source_uri", "ingest_run_id", "ingest_date"])
        rows += [(Path(r["source_uri"]).name, r["ingest_run_id"], str(r["ingest_date"]))
                 for r in table.to_pylist()]
    return sorted(rows)


def _warehouse_rows(settings: PipelineSettings) -> list[tuple[str, str]]:
    with open_warehouse(settings.warehouse) as wh:
        rows = wh.query(f"SELECT source_uri, ingest_run_id FROM {TABLE}").to_pylist()
    return sorted((Path(r["source_uri"]).name, r["ingest_run_id"]) for r in rows)


def test_a_late_copy_with_its_old_mtime_is_exported_by_the_next_night(
    settings: PipelineSettings, tmp_path: Path
) -> None:
    landing = Path(settings.landing)
    _land(landing / "a.dcm", DAY1 + timedelta(hours=2), _instance(1))
    _land(landing / "b.dcm", DAY1 + timedelta(hours=3), _instance(2))
    night1 = _night(settings, 0)
    assert (night1.listed, night1.arrived, night1.exported, night1.late) == (2, 2, 2, 0)
    # Files another tool wrote, kept in an archive since April, copied in with their mtime
    # (shutil.copy2, as `cp -p` and rsync -t do): one is big endian (the general path).
    archive, late = tmp_path / "archive", landing / "late"
    archive.mkdir()
    late.mkdir()
    for name in ("CT_small.dcm", "MR_small_bigendian.dcm"):
        src = archive / name
        shutil.copyfile(str(get_testdata_file(name)), src)
        os.utime(src, ((DAY1 - timedelta(days=20)).timestamp(),) * 2)
        shutil.copy2(src, late / name)
    night2 = _night(settings, 1)
    assert (night2.listed, night2.arrived, night2.exported, night2.late) == (4, 0, 2, 2)
    assert night2.unchanged == 2 and night2.failed == 0
    run1, run2 = interval_run_id(*_day(0)), interval_run_id(*_day(1))
    # The interval names the rows: the late files are night 2's, in its partition.
    assert _parquet_rows(settings) == [
        ("CT_small.dcm", run2, "2026-05-02"), ("MR_small_bigendian.dcm", run2, "2026-05-02"),
        ("a.dcm", run1, "2026-05-01"), ("b.dcm", run1, "2026-05-01")]
    assert _warehouse_rows(settings) == [("CT_small.dcm", run2), ("MR_small_bigendian.dcm", run2),
                                         ("a.dcm", run1), ("b.dcm", run1)]
    # A rerun of either night, and the next night, change nothing.
    for k in (1, 0, 2):
        again = _night(settings, k)
        assert (again.exported, again.late, again.failed) == (0, 0, 0)
    assert len(_parquet_rows(settings)) == 4
    assert len(_warehouse_rows(settings)) == 4


def test_files_modified_at_or_after_the_end_wait_for_their_own_interval(
    settings: PipelineSettings,
) -> None:
    landing = Path(settings.landing)
    _land(landing / "in.dcm", DAY1 + timedelta(hours=23, minutes=59), _instance(1))
    _land(landing / "at_end.dcm", DAY1 + timedelta(days=1), _instance(2))  # end is exclusive
    _land(landing / "later.dcm", DAY1 + timedelta(days=3), _instance(3))
    night1 = _night(settings, 0)
    assert (night1.listed, night1.exported) == (1, 1)
    night2 = _night(settings, 1)
    assert (night2.listed, night2.arrived, night2.exported, night2.late) == (2, 1, 1, 0)
    assert _parquet_rows(settings)[0][:2] == ("at_end.dcm", interval_run_id(*_day(1)))
    # The interval of Day 3 (never run) is late by then: Day 4's night takes its file.
    night4 = _night(settings, 4)
    assert (night4.listed, night4.arrived, night4.exported, night4.late) == (3, 0, 1, 1)
    assert ("later.dcm", interval_run_id(*_day(4))) in _warehouse_rows(settings)


def test_two_backfilled_intervals_then_the_current_one_export_each_file_once(
    settings: PipelineSettings,
) -> None:
    landing = Path(settings.landing)
    names = {k: [f"d{k}-{i}.dcm" for i in range(2)] for k in range(3)}
    for k, files in names.items():
        for i, name in enumerate(files):
            _land(landing / name, DAY1 + timedelta(days=k, hours=1 + i), _instance(10 * k + i))
    # Backfill of Day 0 and Day 1 (each takes only what landed before its end), then Day 2.
    assert [_night(settings, k).exported for k in range(3)] == [2, 2, 2]
    assert [_night(settings, k).late for k in range(3)] == [0, 0, 0]
    expected = sorted((n, interval_run_id(*_day(k))) for k, files in names.items()
                      for n in files)
    assert [r[:2] for r in _parquet_rows(settings)] == expected
    assert _warehouse_rows(settings) == expected
    # Backfilling the same intervals again exports nothing.
    assert [_night(settings, k).exported for k in (0, 1)] == [0, 0]
    assert Counter(r[0] for r in _parquet_rows(settings)) == Counter(n for _, ns in names.items()
                                                                   for n in ns)


def test_a_backfill_after_the_current_night_finds_nothing_left(
    settings: PipelineSettings,
) -> None:
    landing = Path(settings.landing)
    _land(landing / "old.dcm", DAY1 + timedelta(hours=1), _instance(1))
    _land(landing / "new.dcm", DAY1 + timedelta(days=2, hours=1), _instance(2))
    current = _night(settings, 2)  # catchup off: Day 0 was never run
    assert (current.exported, current.late) == (2, 1)
    backfill = _night(settings, 0)
    assert (backfill.listed, backfill.exported, backfill.unchanged) == (1, 0, 1)
    assert [n for n, _ in _warehouse_rows(settings)] == ["new.dcm", "old.dcm"]


def test_a_changed_file_is_exported_again_and_a_touched_one_is_not(
    settings: PipelineSettings,
) -> None:
    landing = Path(settings.landing)
    for name, n in (("changed.dcm", 1), ("touched.dcm", 2), ("kept.dcm", 3),
                    ("resent.dcm", 4), ("recopied.dcm", 5)):
        _land(landing / name, DAY1 + timedelta(hours=1), _instance(n))
    assert _night(settings, 0).exported == 5
    # Same path, new content (a corrected instance); same path, same bytes, new mtime;
    # same path, new content copied in with its old mtime (its size tells); the same bytes
    # copied in again with an older mtime (a candidate, not an export, nor a late one).
    _land(landing / "changed.dcm", DAY1 + timedelta(days=1, hours=5), _instance(11))
    os.utime(landing / "touched.dcm", ((DAY1 + timedelta(days=1, hours=6)).timestamp(),) * 2)
    _land(landing / "resent.dcm", DAY1 + timedelta(hours=1), _instance(4, "Doe^Joan-Marie"))
    _land(landing / "recopied.dcm", DAY1 - timedelta(days=9), _instance(5))
    night2 = _night(settings, 1)
    assert (night2.exported, night2.late, night2.unchanged) == (2, 1, 3)
    run1, run2 = interval_run_id(*_day(0)), interval_run_id(*_day(1))
    assert _warehouse_rows(settings) == [
        ("changed.dcm", run1), ("changed.dcm", run2), ("kept.dcm", run1),
        ("recopied.dcm", run1), ("resent.dcm", run1), ("resent.dcm", run2),
        ("touched.dcm", run1)]
    with open_warehouse(settings.warehouse) as wh:
        hashes = wh.query(f"SELECT COUNT(DISTINCT content_sha256) AS n FROM {TABLE} "
                          "WHERE source_uri LIKE '%changed.dcm'").to_pylist()
    assert hashes == [{"n": 2}]
    # The touched files were hashed once; from now on their new mtimes are known.
    night3 = _night(settings, 2)
    assert (night3.exported, night3.unchanged) == (0, 5)
    assert len(_parquet_rows(settings)) == 7


def test_unchanged_files_are_skipped_on_a_stat_without_being_opened(
    settings: PipelineSettings,
) -> None:
    landing = Path(settings.landing)
    seen = _land(landing / "seen.dcm", DAY1 + timedelta(hours=1), _instance(1))
    assert _night(settings, 0).exported == 1
    # Same size and mtime, other bytes (not DICOM): opened, it would fail or export again.
    _land(seen, DAY1 + timedelta(hours=1), b"\xff" * seen.stat().st_size)
    _land(landing / "new.dcm", DAY1 + timedelta(days=1, hours=1), _instance(2))
    night2 = _night(settings, 1)
    assert (night2.exported, night2.unchanged, night2.failed) == (1, 1, 0)


def test_a_file_that_failed_is_tried_again_the_next_night(settings: PipelineSettings) -> None:
    landing = Path(settings.landing)
    bad = _land(landing / "bad.dcm", DAY1 + timedelta(hours=1), b"")
    night1 = _night(settings, 0)
    assert (night1.exported, night1.failed) == (0, 1)
    assert "zero-byte" in Path(night1.errors_file or "").read_text()
    night2 = _night(settings, 1)
    assert (night2.exported, night2.late, night2.failed) == (0, 0, 1)  # late: exported ones
    assert night2.errors_file and night2.errors_file != night1.errors_file  # one per night
    # Re-sent whole, with the mtime it had: exported, as a late file.
    _land(bad, DAY1 + timedelta(hours=1), _instance(1))
    night3 = _night(settings, 2)
    assert (night3.exported, night3.late, night3.failed) == (1, 1, 0)
