"""What a run's policy did is recorded, PHI-free, where an auditor reads (probe 10 #9): a
project that weakens on purpose (keep-all profile, gate exceptions for the patient's
name and ID, no review) used to be recorded in ``deid_runs``, the manifest in the tree
and ``runs/<batch>/report.md`` only as ``success`` and a config hash. Each now names the
profile, whether identity was removed, the options claimed, the attributes kept beyond
the profile, the declared exceptions, the review rule, the date handling, and a plain
``weakened`` line."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from test_deid_steps import _exported_one_patient

from dicom_deid.config.google import config_from_options
from dicom_deid.config.model import privacy_first
from dicom_deid.pipeline import deid_steps
from dicom_deid.pipeline.deid_steps import RunWorkspace
from dicom_deid.pipeline.projects import DEFAULT_REVIEW, RunRequest
from dicom_deid.pipeline.run_record import (
    NOT_WEAKENED,
    POLICY_COLUMNS,
    key_id,
    policy_record,
)
from dicom_deid.pipeline.settings import PipelineSettings
from dicom_deid.pipeline.shards import ShardLimits
from dicom_deid.review.policy import ReviewPolicy
from dicom_deid.warehouse.factory import open_warehouse
from instances import KEY

DAY1 = datetime(2026, 5, 1, tzinfo=UTC)
COHORT_SQL = """-- Every series of one modality.
-- param modality STRING
SELECT DISTINCT StudyInstanceUID, SeriesInstanceUID
FROM dicom_metadata
WHERE Modality = @modality
"""
#: What the weakened project declares (as the probe's did, shorter).
EXCEPTIONS = frozenset({"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                        "InstitutionName", "ReferringPhysicianName", "OperatorsName",
                        "StudyID", "InstitutionAddress", "StationName", "PatientAddress",
                        "PatientTelephoneNumbers", "RetainUIDs", "PerformingPhysicianName",
                        "DeviceSerialNumber", "InstitutionalDepartmentName",
                        "RequestingPhysician", "PhysiciansOfRecord", "IssuerOfPatientID",
                        "NameOfPhysiciansReadingStudy", "PatientMotherBirthName",
                        "PerformedProcedureStepID", "PersonName", "RequestedProcedureID",
                        "ScheduledProcedureStepID"})


def _keep_all() -> Any:
    return config_from_options("keep-all", [])


# -- the record itself --------------------------------------------------------------------


def test_the_privacy_first_default_is_recorded_as_not_weakened() -> None:
    record = policy_record(privacy_first(), frozenset(), DEFAULT_REVIEW)
    assert set(record) == set(POLICY_COLUMNS)
    assert record["profile"] == "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"
    assert record["identity_removed"] is True
    assert record["options_claimed"] == "CLEAN_DESCRIPTORS"
    assert (record["kept_beyond_profile"], record["gate_exceptions"]) == ("", "")
    assert (record["review"], record["dates"]) == ("at-risk", "REMOVED")
    assert record["pixels"].startswith("cleaned") and record["residual_sweep"] is True
    assert record["weakened"] == NOT_WEAKENED


def test_a_keep_all_project_with_exceptions_and_no_review_is_recorded_as_weakened() -> None:
    record = policy_record(_keep_all(), EXCEPTIONS, ReviewPolicy("none"))
    assert record["profile"] == "KEEP_ALL_PROFILE"
    assert record["identity_removed"] is False
    kept = record["kept_beyond_profile"].split(",")
    assert {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"} <= set(kept)
    assert record["gate_exceptions"].split(",") == sorted(EXCEPTIONS)
    assert "RETAIN_UIDS" in record["options_claimed"].split(",")
    assert (record["review"], record["dates"]) == ("none", "UNMODIFIED")
    for said in ("patient identity NOT removed", "profile KEEP_ALL_PROFILE",
                 "gate exceptions: AccessionNumber, DeviceSerialNumber", "no review",
                 "options keep: ", "RETAIN_LONGITUDINAL_FULL_DATES"):
        assert said in record["weakened"], said


@pytest.mark.parametrize(("config", "review", "said"), [
    (privacy_first(), ReviewPolicy("sample", 5), "review of a sample 5% only"),
    (privacy_first(residual_sweep=False), DEFAULT_REVIEW, "no residual sweep"),
    (config_from_options("basic", []), DEFAULT_REVIEW, "burned-in text not redacted"),
    (config_from_options("basic", ["RetainLongitudinalFullDates"]), DEFAULT_REVIEW,
     "options keep: RETAIN_LONGITUDINAL_FULL_DATES"),
])
def test_each_weakening_is_named(config: Any, review: ReviewPolicy, said: str) -> None:
    record = policy_record(config, frozenset(), review)
    assert said in record["weakened"]
    assert record["identity_removed"] is True  # weaker, yet within the profile's options


# -- a whole run --------------------------------------------------------------------------


@pytest.fixture
def weakened_run(tmp_path: Path) -> dict[str, Any]:
    """A keep-all project with gate exceptions and no review, run on a small CT corpus
    (every step, as the DAG calls them), and finished."""
    settings, _ = _exported_one_patient(tmp_path, seed=7)
    cohort = tmp_path / "ct.sql"
    cohort.write_text(COHORT_SQL)
    req = RunRequest(cohort=str(cohort), cohort_params={"modality": "CT"},
                     policy=_keep_all(), project="weak", exceptions=EXCEPTIONS,
                     review=ReviewPolicy("none"))
    settings = dataclasses.replace(settings, destination=f"{settings.destination}/weak")
    ws = RunWorkspace(settings.work_dir, "batch-weak")
    deid_steps.run_cohort(ws, settings, req)
    deid_steps.write_filter_file(ws)
    deid_steps.resolve_instances(ws, settings, req, key_id(KEY))
    for plan in deid_steps.plan_run_shards(ws, ShardLimits(max_files=50), settings):
        deid_steps.deidentify_shard(ws, settings, req, plan["shard"], KEY)
        deid_steps.verify_shard(ws, settings, req, plan["shard"])
    deid_steps.publish(ws, settings, req, DAY1)
    result = deid_steps.finish_run(ws, settings, req, failed_tasks=[], completed=True,
                                   started_at=DAY1, user="alice")
    return {"settings": settings, "ws": ws, "result": result}


def test_a_weakened_run_is_plain_in_deid_runs_the_manifest_and_the_report(
        weakened_run: dict[str, Any]) -> None:
    settings, ws = weakened_run["settings"], weakened_run["ws"]
    assert weakened_run["result"]["status"] == "success"
    with open_warehouse(settings.warehouse) as wh:
        row = wh.query("SELECT * FROM deid_runs WHERE run_id = 'batch-weak'").to_pylist()[0]
    assert row["profile"] == "KEEP_ALL_PROFILE" and row["identity_removed"] is False
    assert row["review"] == "none" and row["dates"] == "UNMODIFIED"
    assert "PatientName" in row["kept_beyond_profile"].split(",")
    assert row["gate_exceptions"].split(",") == sorted(EXCEPTIONS)
    assert "patient identity NOT removed" in row["weakened"]
    assert "no review" in row["weakened"]

    manifests = list((Path(settings.destination) / "manifests").glob("*.json"))
    assert len(manifests) == 1
    said = json.loads(manifests[0].read_text())["deidentification"]
    assert {k: said[k] for k in POLICY_COLUMNS} == {k: row[k] for k in POLICY_COLUMNS}
    assert said["config_sha256"] == row["config_sha256"]

    report = (ws.root / "report.md").read_text()
    assert "**WEAKENED: patient identity NOT removed" in report
    assert "- Patient identity removed: **NO**" in report
    assert "- Profile: KEEP_ALL_PROFILE" in report
    assert "- Review: none" in report
    assert "- Gate exceptions declared: AccessionNumber, DeviceSerialNumber" in report
    assert "PatientName" in report.split("- Kept beyond the profile")[1].splitlines()[0]


def test_a_run_that_ends_before_its_policy_is_known_records_nulls(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": str(tmp_path)})
    ws = RunWorkspace(settings.work_dir, "batch-bad")
    ws.prepare()
    result = deid_steps.finish_run(ws, settings, None, failed_tasks=["run_cohort"],
                                   completed=False, started_at=DAY1, user="alice",
                                   cohort="c.sql", project="p")
    assert result["status"] == "failed"
    with open_warehouse(settings.warehouse) as wh:
        row = wh.query("SELECT * FROM deid_runs").to_pylist()[0]
    assert {row[k] for k in POLICY_COLUMNS} == {None}
    assert "Not recorded: the run ended before its policy was known" in (
        ws.root / "report.md").read_text()


def test_an_older_deid_runs_table_gains_the_policy_columns(tmp_path: Path) -> None:
    """A warehouse written by an earlier version loads: its rows keep NULL policy
    columns, a new run fills them in."""
    settings = PipelineSettings.from_env({"DICOM_DEID_DATA_DIR": str(tmp_path)})
    path = settings.warehouse.removeprefix("duckdb://")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(path)
    con.execute("CREATE TABLE deid_runs (run_id VARCHAR, started_at TIMESTAMPTZ, "
                "finished_at TIMESTAMPTZ, user VARCHAR, config_sha256 VARCHAR, "
                "cohort VARCHAR, processed BIGINT, failed BIGINT, skipped BIGINT, "
                "status VARCHAR, reason VARCHAR, key_id VARCHAR, engine VARCHAR, "
                "project VARCHAR, reviewer VARCHAR)")
    con.execute("INSERT INTO deid_runs (run_id, status) VALUES ('batch-old', 'success')")
    con.close()
    ws = RunWorkspace(settings.work_dir, "batch-new")
    ws.prepare()
    req = RunRequest(cohort="c.sql", cohort_params={}, policy=_keep_all(), project="p",
                     review=ReviewPolicy("none"))
    deid_steps.record_run(ws, settings, req, outcome=deid_steps.RunOutcome("failed", "x"),
                          started_at=DAY1, user="alice")
    with open_warehouse(settings.warehouse) as wh:
        rows = {r["run_id"]: r for r in wh.query("SELECT * FROM deid_runs").to_pylist()}
    assert {rows["batch-old"][k] for k in POLICY_COLUMNS} == {None}
    assert rows["batch-new"]["profile"] == "KEEP_ALL_PROFILE"
    assert rows["batch-new"]["identity_removed"] is False
