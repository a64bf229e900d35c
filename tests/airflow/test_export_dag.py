"""The export DAG over two nights, run for real with ``dag.test()``: a file copied into the
landing zone with an old mtime after night 1 is exported by night 2, once, under night 2's
interval, and nothing exported before is exported again; a rerun of night 2 changes nothing.

Airflow's home, the landing zone and the DAG bag are the fixtures of ``test_dags.py``
(module-scoped: this module gets its own landing zone and warehouse).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_dags import ARRIVED, _warehouse_rows, dags, env

from conftest import RESTRICTED_KEY_HEX
from dicom_deid.duckdb_crypto import read_encrypted_parquet
from dicom_deid.pipeline.interval_export import interval_run_id
from instances import make_instance, to_bytes

pytestmark = pytest.mark.airflow
__all__ = ["dags", "env"]  # fixtures this module uses, imported from test_dags
NIGHT1 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)  # data interval: Mar 10, when env's files landed
NIGHT2 = datetime(2026, 3, 12, 5, 0, tzinfo=UTC)  # data interval: Mar 11
LATE_MTIME = ARRIVED - timedelta(days=9)  # before night 1's interval
LATE_UID = "1.2.826.0.1.3680043.10.543.77.1"
ROWS_SQL = ("SELECT source_uri, content_sha256, ingest_run_id, CAST(ingest_date AS VARCHAR) "
            "AS ingest_date FROM dicom_metadata ORDER BY source_uri, content_sha256")


def _export_result(run: Any) -> dict[str, Any]:
    """What ``export_landing`` returned (its XCom) in a finished DAG run."""
    value = run.get_task_instance("export_landing").xcom_pull(task_ids="export_landing")
    assert isinstance(value, dict)
    return value


def _parts(metadata: Path) -> dict[str, str]:
    """Parquet part -> SHA-256 of every part the export wrote."""
    return {p.relative_to(metadata).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(metadata.glob("ingest_date=*/part-*.parquet"))}


@pytest.fixture(scope="module")
def nights(env: dict[str, Any], dags: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Any]:
    """Night 1; a late copy lands; night 2; night 2 again. What each left behind."""
    data = env["data"]
    metadata = data / "metadata" / "dicom_metadata"
    export = dags["dicom_metadata_export"]
    landing = data / "landing" / "dicom"
    landed = sum(1 for p in landing.rglob("*") if p.is_file())
    good = len(env["answer_key"].files)  # the rest are planted bad inputs (zero-byte, ...)
    seen: dict[str, Any] = {"landed": landed, "good": good, "bad": landed - good,
                            "metadata": metadata}
    run1 = export.test(logical_date=NIGHT1)
    seen.update(run1=run1, night1=_export_result(run1), rows1=_warehouse_rows(data, ROWS_SQL))
    # A file written elsewhere nine days earlier and copied in keeping its mtime (cp -p).
    ds = make_instance(name="Latecomer^Lena")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = LATE_UID
    archive = tmp_path_factory.mktemp("archive") / "late.dcm"
    archive.write_bytes(to_bytes(ds))
    os.utime(archive, (LATE_MTIME.timestamp(), LATE_MTIME.timestamp()))
    late = landing / "resent" / "late.dcm"
    late.parent.mkdir()
    shutil.copy2(archive, late)
    assert late.stat().st_mtime == LATE_MTIME.timestamp()
    seen["late"] = str(late)
    run2 = export.test(logical_date=NIGHT2)
    seen.update(run2=run2, night2=_export_result(run2), rows2=_warehouse_rows(data, ROWS_SQL),
                parts2=_parts(metadata))
    rerun = export.test(logical_date=NIGHT2)
    seen.update(rerun=rerun, again=_export_result(rerun), rows3=_warehouse_rows(data, ROWS_SQL),
                parts3=_parts(metadata))
    return seen


def test_night_one_exports_the_landing_zone(nights: dict[str, Any]) -> None:
    run1, night1 = nights["run1"], nights["night1"]
    assert run1.state == "success"
    assert run1.data_interval_start == datetime(2026, 3, 10, tzinfo=UTC)
    run_id = interval_run_id(run1.data_interval_start, run1.data_interval_end)
    assert night1["run_id"] == run_id
    landed, good, bad = nights["landed"], nights["good"], nights["bad"]
    assert night1["listed"] == night1["arrived"] == landed
    assert bad > 0 and (night1["exported"], night1["late"], night1["failed"]) == (good, 0, bad)
    assert len(nights["rows1"]) == good
    assert {r["ingest_run_id"] for r in nights["rows1"]} == {run_id}


def test_night_two_exports_the_late_copy_once_and_nothing_else(nights: dict[str, Any]) -> None:
    run2, night2, landed = nights["run2"], nights["night2"], nights["landed"]
    good, bad = nights["good"], nights["bad"]
    assert run2.state == "success"
    run_id = interval_run_id(run2.data_interval_start, run2.data_interval_end)
    assert night2["run_id"] == run_id != nights["night1"]["run_id"]
    assert (night2["listed"], night2["arrived"]) == (landed + 1, 0)
    assert (night2["exported"], night2["late"], night2["unchanged"]) == (1, 1, good)
    assert night2["failed"] == bad  # bad inputs are tried again each night, never exported
    rows = nights["rows2"]
    late = [r for r in rows if r["source_uri"] == nights["late"]]
    assert [(r["ingest_run_id"], r["ingest_date"]) for r in late] == [(run_id, "2026-03-11")]
    # Every row night 1 loaded is there as it was: nothing was exported twice.
    assert [r for r in rows if r["source_uri"] != nights["late"]] == nights["rows1"]
    # Night 2's Parquet holds exactly the late file's row.
    night2_parts = [p for p in nights["parts2"] if f"part-{run_id}-" in p]
    assert night2_parts and all(p.startswith("ingest_date=2026-03-11/") for p in night2_parts)
    # (encrypted under the restricted key, the test deployment's connection: the
    # identified catalog at rest)
    key = bytes.fromhex(RESTRICTED_KEY_HEX)
    tables = [read_encrypted_parquet(nights["metadata"] / p, key) for p in night2_parts]
    uris = [u for t in tables for u in t.column("source_uri").to_pylist()]
    assert uris == [nights["late"]]
    with open(nights["late"], "rb") as fh:  # the row is the file's current content
        assert late[0]["content_sha256"] == hashlib.sha256(fh.read()).hexdigest()


def test_a_rerun_of_night_two_changes_nothing(nights: dict[str, Any]) -> None:
    assert nights["rerun"].state == "success"
    again = nights["again"]
    assert (again["exported"], again["late"], again["failed"]) == (0, 0, nights["bad"])
    assert (again["listed"], again["unchanged"]) == (nights["landed"] + 1, nights["good"] + 1)
    assert nights["rows3"] == nights["rows2"]
    assert nights["parts3"] == nights["parts2"]
