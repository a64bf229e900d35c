"""The engine steps under the DAGs, without Airflow: storage, shards, verify, intervals."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from dicom_deid.config.model import DeidConfig, Option
from dicom_deid.errors import StorageError
from dicom_deid.pipeline.interval_export import export_interval, load_export
from dicom_deid.pipeline.settings import PipelineSettings
from dicom_deid.pipeline.shards import ShardLimits, plan_shards
from dicom_deid.pipeline.storage import LocalStore, open_store
from dicom_deid.pipeline.verify import checked_keywords, verify_outputs
from dicom_deid.warehouse.factory import open_warehouse
from instances import deidentify_bytes, make_instance, to_bytes

DAY1 = datetime(2026, 5, 1, tzinfo=UTC)


def _touch(path: Path, moment: datetime, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (moment.timestamp(), moment.timestamp()))


# -- storage ----------------------------------------------------------------------------


def test_local_store_lists_by_modification_interval_and_skips_hidden(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "1.dcm", DAY1 + timedelta(hours=1))
    _touch(tmp_path / "a" / "2.dcm", DAY1 + timedelta(days=1))  # end is exclusive
    _touch(tmp_path / ".staging" / "x.dcm", DAY1 + timedelta(hours=2))
    _touch(tmp_path / "_errors" / "y.csv", DAY1 + timedelta(hours=2))
    store = open_store(tmp_path)
    day = store.list_files(modified_from=DAY1, modified_to=DAY1 + timedelta(days=1))
    assert [f.rel for f in day] == ["a/1.dcm"]
    assert day[0].modified == DAY1 + timedelta(hours=1)
    assert [f.rel for f in store.list_files()] == ["a/1.dcm", "a/2.dcm"]


def test_put_tree_replaces_a_folder_whole(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = store.scratch_dir("stage/s1")
    (first / "old.dcm").write_bytes(b"old")
    store.put_tree(first, "stage/s1")
    second = store.scratch_dir("stage/s1")
    (second / "new.dcm").write_bytes(b"new")
    store.put_tree(second, "stage/s1")
    assert [f.rel for f in store.list_files("stage")] == ["stage/s1/new.dcm"]
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["s1"]  # no leftovers


def test_merge_into_publishes_shards_as_one_tree_and_refuses_collisions(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for shard, name in (("s1", "st/se1/a.dcm"), ("s2", "st/se2/b.dcm")):
        store.write_bytes(f"stage/{shard}/{name}", shard.encode())
    assert store.merge_into(["stage/s1", "stage/s2"], "batch") == 2
    assert [f.rel for f in store.list_files("batch")] == ["batch/st/se1/a.dcm",
                                                          "batch/st/se2/b.dcm"]
    assert not store.exists("stage/s1")
    store.write_bytes("stage/s3/st/x.dcm", b"1")
    store.write_bytes("stage/s4/st/x.dcm", b"2")
    with pytest.raises(StorageError, match="two sources"):
        store.merge_into(["stage/s3", "stage/s4"], "batch")
    assert store.read_bytes("batch/st/se1/a.dcm") == b"s1"  # the old batch is intact


def test_unsupported_schemes_and_parent_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not supported yet"):
        open_store("gs://bucket/landing")
    with pytest.raises(StorageError, match=r"\.\."):
        LocalStore(tmp_path).read_bytes("../etc/passwd")


# -- shards -----------------------------------------------------------------------------


def _instances(series_sizes: list[int]) -> pa.Table:
    rows = [{"source_uri": f"/l/{s}/{i}", "StudyInstanceUID": f"1.{s // 2}",
             "SeriesInstanceUID": f"1.{s // 2}.{s}", "SOPInstanceUID": f"1.{s}.{i}",
             "size_bytes": 100}
            for s, n in enumerate(series_sizes) for i in range(n)]
    return pa.Table.from_pylist(rows)


def test_shards_hold_whole_series_within_limits() -> None:
    plans, tables = plan_shards(_instances([3, 3, 5, 1, 2]), ShardLimits(max_files=6))
    assert [p.files for p in plans] == [6, 6, 2]
    for table in tables:
        series = table.column("SeriesInstanceUID").to_pylist()
        assert all(series.count(s) == _instances([3, 3, 5, 1, 2]).column(
            "SeriesInstanceUID").to_pylist().count(s) for s in set(series))
    assert sum(t.num_rows for t in tables) == 14
    big = plan_shards(_instances([9]), ShardLimits(max_files=2))[0]
    assert [p.files for p in big] == [9]  # a series is never split


def test_shard_count_is_capped_by_growing_shards() -> None:
    plans, _ = plan_shards(_instances([1] * 500), ShardLimits(max_files=1, max_shards=40))
    assert len(plans) <= 40
    assert sum(p.files for p in plans) == 500
    again, _ = plan_shards(_instances([1] * 500), ShardLimits(max_files=1, max_shards=40))
    assert again == plans  # deterministic


def test_series_sharing_a_sop_instance_uid_meet_in_one_shard() -> None:
    """A re-send of an instance under another study lands in the shard of the first, so
    the batch's duplicate rule sees both (in two shards both would be published)."""
    table = _instances([2, 2, 2, 2])
    rows = table.to_pylist()
    rows[7]["SOPInstanceUID"] = rows[0]["SOPInstanceUID"]  # series 3 re-sends one of series 0
    plans, tables = plan_shards(pa.Table.from_pylist(rows), ShardLimits(max_files=2))
    assert [p.files for p in plans] == [4, 2, 2]
    assert [p.series for p in plans] == [2, 1, 1]
    first = tables[0].column("SeriesInstanceUID").to_pylist()
    assert set(first) == {"1.0.0", "1.1.3"}
    assert sum(t.num_rows for t in tables) == 8


# -- verify -----------------------------------------------------------------------------


def _original_row() -> dict[str, object]:
    ds = make_instance()
    return {"PatientName": {"Alphabetic": str(ds.PatientName), "Ideographic": None},
            "PatientID": ds.PatientID, "AccessionNumber": ds.AccessionNumber,
            "InstitutionName": ds.InstitutionName, "StudyInstanceUID": ds.StudyInstanceUID,
            "SOPInstanceUID": ds.SOPInstanceUID}


def test_verify_passes_a_clean_output_and_names_leaks_without_values(tmp_path: Path) -> None:
    config = DeidConfig()
    _, result, clean = deidentify_bytes(to_bytes(make_instance()))
    (tmp_path / "clean.dcm").write_bytes(clean)
    leaky = make_instance()
    leaky.PatientID = "X"  # only the name survives, hidden in a kept-looking place
    leaky.ImageComments = "seen by SMITH today"
    (tmp_path / "leaky.dcm").write_bytes(to_bytes(leaky))
    keywords = checked_keywords(config)
    assert "PatientName" in keywords and "SOPInstanceUID" in keywords
    report = verify_outputs([("clean.dcm", tmp_path / "clean.dcm", _original_row(),
                              result.sop_uid)], keywords)
    assert report.ok, report.summary()
    report = verify_outputs([("leaky.dcm", tmp_path / "leaky.dcm", _original_row(), None)],
                            keywords)
    problems = {f.problem for f in report.findings}
    assert "original PatientName value found" in problems
    assert "original AccessionNumber value found" in problems
    assert "Smith" not in report.summary() and "ACC7766554" not in report.summary()


def test_verify_ignores_what_the_config_keeps_and_flags_unreadable_files(
    tmp_path: Path
) -> None:
    keep_uids = checked_keywords(DeidConfig(options=frozenset({Option.RETAIN_UIDS})))
    assert "SOPInstanceUID" not in keep_uids and "PatientName" in keep_uids
    (tmp_path / "bad.dcm").write_bytes(b"not dicom at all" * 20)
    report = verify_outputs([("bad.dcm", tmp_path / "bad.dcm", {}, None)], keep_uids)
    assert [f.problem for f in report.findings] == ["not readable DICOM (not-dicom)"]


# -- interval export --------------------------------------------------------------------


def test_intervals_export_each_file_once_and_reruns_change_nothing(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    for i, day in enumerate((0, 0, 1)):
        ds = make_instance()
        ds.SOPInstanceUID = f"1.2.3.{i}"
        _touch(landing / f"{i}.dcm", DAY1 + timedelta(days=day, hours=3), to_bytes(ds))
    _touch(landing / "bad.dcm", DAY1 + timedelta(hours=4), b"")
    settings = PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": str(tmp_path),
                                          "DICOM_DEID_LANDING": str(landing)})
    wh = settings.warehouse
    out = settings.metadata_dir / "dicom_metadata"
    day1 = export_interval(settings, DAY1, DAY1 + timedelta(days=1))
    assert (day1.arrived, day1.exported, day1.failed) == (3, 2, 1)
    assert Path(day1.errors_file or "").read_text().count("zero-byte") == 1
    assert load_export(wh, out, day1.run_id, "dicom_metadata") == 2
    day2 = export_interval(settings, DAY1 + timedelta(days=1), DAY1 + timedelta(days=2))
    assert (day2.arrived, day2.exported) == (1, 1)
    load_export(wh, out, day2.run_id, "dicom_metadata")
    again = export_interval(settings, DAY1, DAY1 + timedelta(days=1))
    assert (again.exported, again.unchanged) == (0, 2)
    load_export(wh, out, again.run_id, "dicom_metadata")
    with open_warehouse(wh) as warehouse:
        rows = warehouse.query("SELECT SOPInstanceUID, ingest_date FROM dicom_metadata "
                               "ORDER BY 1").to_pylist()
    assert [r["SOPInstanceUID"] for r in rows] == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    assert [str(r["ingest_date"]) for r in rows] == ["2026-05-01", "2026-05-01", "2026-05-02"]

