"""The Airflow DAGs, run for real with ``dag.test()`` on a tiny synthetic landing zone.

Airflow gets its own home (SQLite) in a temporary folder; it is imported only inside
the fixtures, after the environment points at that home. The de-identification DAGs come
from project files written to a temporary ``$DICOM_DEID_PROJECTS_DIR``. Each
``dag.test()`` costs a few seconds, so one module-scoped run feeds several assertions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.parquet as pq
import pydicom
import pytest

from dicom_deid.pipeline.run_record import key_id
from dicom_deid.synth import generate, planted_byte_patterns

# Run apart from the other tests (see the Makefile): Airflow leaves threads behind,
# and the other tests fork worker pools, which is only safe in a single-threaded process.
pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]
KEY_HEX = "5f" * 32
ARRIVED = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # landing files' mtime
EXPORT_RUN = datetime(2026, 3, 11, 1, 0, tzinfo=UTC)  # its data interval: Mar 10
DEID_RUN = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
LEAK_RUN = datetime(2026, 3, 13, 9, 0, tzinfo=UTC)
BAD_COHORT_RUN = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
EMPTY_RUN = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
WIDE_RUN = datetime(2026, 3, 16, 9, 0, tzinfo=UTC)
DRY_RUN = datetime(2026, 3, 17, 9, 0, tzinfo=UTC)
STUDY = "us_research"  # the project most tests run: privacy-first, a wide cohort window
LEAKY = "leaky"  # a project whose own policy file keeps a text that names the patient
STUDY_YAML = """
name: us_research
description: Every patient with an ultrasound.
cohort: patients_with_us
cohort_params: {start_date: 2000-01-01, end_date: 2099-12-31}
"""
# A project policy (its version-controlled file) that keeps StudyDescription (which names
# the patient) while PatientName is removed, with the residual sweep (which would clean
# it) explicitly switched off.
LEAKY_CONFIG = {"dicomTagConfig": {"actions": [{"queries": ["StudyDescription"],
                                                "keepTag": {}}]},
                "dicomDeid": {"residualSweep": False}}
BY_DATE = "by_date"  # every study in a date window: a narrower window, a smaller cohort
BY_DATE_YAML = """
name: by_date
cohort: studies_in_window.sql
cohort_params: {start_date: 2000-01-01, end_date: 2099-12-31}
schedule: null
"""
BY_DATE_SQL = """\
-- param start_date DATE
-- param end_date DATE
SELECT DISTINCT StudyInstanceUID FROM dicom_metadata
WHERE StudyDate BETWEEN @start_date AND @end_date
"""
LEAKY_YAML = """
name: leaky
cohort: patients_with_us
cohort_params: {start_date: 2000-01-01, end_date: 2099-12-31}
policy: {config: leaky.json}
schedule: null
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A migrated Airflow home, a landing zone with known PHI, and the key connection."""
    base = tmp_path_factory.mktemp("pipeline")
    data = base / "data"
    key = generate(data / "landing", patients=3, seed=11, instances_per_series=3, small=True)
    for path in (data / "landing" / "dicom").rglob("*"):
        os.utime(path, (ARRIVED.timestamp(), ARRIVED.timestamp()))
    projects = base / "projects"
    projects.mkdir()
    (projects / f"{STUDY}.yaml").write_text(STUDY_YAML)
    (projects / f"{LEAKY}.yaml").write_text(LEAKY_YAML)
    (projects / "leaky.json").write_text(json.dumps(LEAKY_CONFIG))
    (projects / f"{BY_DATE}.yaml").write_text(BY_DATE_YAML)
    (projects / "studies_in_window.sql").write_text(BY_DATE_SQL)
    values = {
        "AIRFLOW_HOME": str(base / "airflow"),
        "DICOM_DEID_PROJECTS_DIR": str(projects),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DICOM_DEID_DATA_DIR": str(data),
        "DICOM_DEID_LANDING": str(data / "landing" / "dicom"),
        "DICOM_DEID_WORKERS": "2",
        "AIRFLOW_CONN_DICOM_DEID_KEY": json.dumps({"conn_type": "generic",
                                                    "password": KEY_HEX}),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, v)
        airflow = Path(sys.executable).parent / "airflow"
        subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
        yield {"data": data, "dest": data / "deid" / STUDY,  # type: ignore[dict-item]
               "answer_key": key, "projects": projects}


@pytest.fixture(scope="module")
def dags(env: dict[str, Any]) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    for dag in bag.dags.values():
        for t in dag.tasks:  # a failure must fail now, not wait for a retry delay
            t.retries = 0
    return bag.dags


def _warehouse_rows(data: Path, sql: str) -> list[dict[str, Any]]:
    from dicom_deid.warehouse.factory import open_warehouse

    with open_warehouse(f"duckdb://{data / 'warehouse' / 'dicom_deid.duckdb'}") as wh:
        return wh.query(sql).to_pylist()


def _warehouse_count(data: Path, sql: str) -> int:
    return next(iter(_warehouse_rows(data, sql)[0].values()))


def _run_row(data: Path, batch: str) -> dict[str, Any]:
    rows = _warehouse_rows(data, f"SELECT * FROM deid_runs WHERE run_id = '{batch}'")
    assert len(rows) == 1, rows  # exactly one row per run
    return rows[0]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(env: dict[str, Any], dags: dict[str, Any]) -> dict[str, Any]:
    export = dags["dicom_metadata_export"].test(logical_date=EXPORT_RUN)
    deid = dags[f"dicom_deid__{STUDY}"].test(
        logical_date=DEID_RUN, run_conf={"shard_max_files": 4})
    from dicom_deid.pipeline.deid_steps import batch_id_for

    batch = env["dest"] / batch_id_for(DEID_RUN, STUDY)
    return {"export": export, "deid": deid, "batch": batch, "digest": _tree_digest(batch)}


def test_dags_import_with_the_expected_shape(dags: dict[str, Any]) -> None:
    from dicom_deid.airflow.tasks import RUN_PARAMS, notify_failure

    # One DAG per project file, and nothing else.
    assert set(dags) == {"dicom_metadata_export", f"dicom_deid__{STUDY}", f"dicom_deid__{LEAKY}",
                         f"dicom_deid__{BY_DATE}"}
    export, deid = dags["dicom_metadata_export"], dags[f"dicom_deid__{STUDY}"]
    # The DAG declares only params that narrow a run (the engine refuses any other).
    assert {"start_date", "end_date", "dry_run", "priority"} <= set(deid.params) <= RUN_PARAMS
    assert not {"cohort", "cohort_params", "options", "config"} & set(deid.params)
    assert set(export.task_ids) == {"export_landing", "load_metadata"}
    assert export.get_task("load_metadata").upstream_task_ids == {"export_landing"}
    assert [o.name for o in export.get_task("load_metadata").outlets] == ["dicom_metadata"]
    assert type(export.timetable).__name__ == "CronDataIntervalTimetable"
    chain = ["run_cohort", "write_filter_file", "resolve_instances", "plan_shards",
             "deidentify_shard", "verify_shard", "publish"]
    for up, down in itertools.pairwise(chain):
        assert deid.get_task(down).upstream_task_ids == {up}, down
    assert deid.get_task("write_manifest").upstream_task_ids == {
        "load_deid_metadata", "load_mapping"}
    # One task records every run, after every other task, whatever happened.
    finish = deid.get_task("finish_run")
    assert finish.is_teardown and finish.on_failure_fail_dagrun
    assert finish.get_flat_relative_ids(upstream=True) == set(deid.task_ids) - {"finish_run"}
    assert {"deidentify_shard", "verify_shard", "load_deid_metadata", "load_mapping",
            "write_manifest"} <= finish.upstream_task_ids  # what may run in parallel
    assert "record_run" not in deid.task_ids
    assert deid.get_task("deidentify_shard").is_mapped  # type: ignore[attr-defined]
    for dag in (export, deid):
        for t in dag.tasks:
            callbacks = t.on_failure_callback  # a list on operators, as given on mapped ones
            assert (callbacks if isinstance(callbacks, list) else [callbacks]) == [
                notify_failure], t.task_id
    assert type(deid.timetable).__name__ == "AssetTriggeredTimetable"
    assert "dicom_metadata" in repr(deid.timetable.asset_condition)
    # A project file with ``schedule: null`` runs when triggered only.
    assert type(dags[f"dicom_deid__{LEAKY}"].timetable).__name__ == "NullTimetable"


def test_end_to_end_publishes_clean_files_and_loads_tables(
    env: dict[str, Any], first_run: dict[str, Any]
) -> None:
    assert first_run["export"].state == "success"
    assert first_run["deid"].state == "success"
    data, batch = env["data"], first_run["batch"]
    key = env["answer_key"]
    landed = len(key.files)
    assert _warehouse_count(data, "SELECT COUNT(*) FROM dicom_metadata") == landed
    # The default cohort selects every patient with an ultrasound study.
    ws = data / "runs" / batch.name
    plan = json.loads((ws / "shards" / "plan.json").read_text())
    selected = sum(s["files"] for s in plan)
    assert 0 < selected <= landed
    assert len(plan) >= 2  # really mapped
    files = sorted(batch.rglob("*.dcm"))
    assert len(files) == selected
    patterns = planted_byte_patterns(key)
    for f in files:
        content = f.read_bytes()
        assert not [p for p in patterns if p in content], f.name
    assert _warehouse_count(data, "SELECT COUNT(*) FROM deid_metadata") == selected
    assert _warehouse_count(data, "SELECT COUNT(*) FROM deid_mapping") == selected
    assert _warehouse_count(data, "SELECT COUNT(*) FROM deid_runs WHERE processed = "
                                  f"{selected} AND status = 'success'") == 1
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["batch_id"] == batch.name
    assert manifest["priority"] == "routine"
    assert manifest["image_count"] == selected
    studies = {p.parent.parent.name for p in files}
    assert manifest["study_count"] == len(studies)
    assert {s["study_uid"] for s in manifest["studies"]} == studies
    assert not (env["dest"] / ".staging" / batch.name).exists()
    # The run report counts, per shard, the files the (fast) byte path wrote: under the
    # privacy-first default every file but the images at risk (whose pixels OCR reads).
    rows = [line.split("|")[1:-1] for line in (ws / "report.md").read_text().splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    assert sum(int(r[1]) for r in rows) == selected
    at_risk = sum(pydicom.dcmread(f, stop_before_pixels=True).Modality in ("US", "OT")
                  for f in files)
    assert 0 < at_risk < selected
    assert sum(int(r[2]) for r in rows) == selected - at_risk


def test_a_successful_run_is_recorded_once_and_leaves_no_identified_files(
    env: dict[str, Any], first_run: dict[str, Any]
) -> None:
    data, batch = env["data"], first_run["batch"]
    row = _run_row(data, batch.name)
    assert (row["status"], row["reason"], row["user"]) == ("success", None, "dag_test")
    assert row["key_id"] == key_id(bytes.fromhex(KEY_HEX)) and KEY_HEX[:16] != row["key_id"]
    # The fingerprint an auditor joins on: the outputs name its first 16 hex digits.
    methods = {v for f in sorted(batch.rglob("*.dcm"))[:5]
               for v in pydicom.dcmread(f, stop_before_pixels=True).DeidentificationMethod}
    named = {m.split()[-1] for m in methods if m.startswith("config sha256 ")}
    assert named == {row["config_sha256"][:16]} and len(row["config_sha256"]) == 64
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["deidentification"]["config_sha256"] == row["config_sha256"]
    # Identified intermediates are gone; what is left holds counts and the gate's verdicts
    # (pseudonymous paths, hashes), privately.
    ws = data / "runs" / batch.name
    left = sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*") if p.is_file())
    assert "report.md" in left and "shards/plan.json" in left
    assert all(re.fullmatch(r"(report\.md|policy\.json|shards/plan\.json|(deidentified|verified)/"
                            r"shard-\d+\.json|verdicts/shard-\d+\.parquet)", name)
               for name in left), left
    verdicts = [v for p in sorted(ws.glob("verdicts/*.parquet"))
                for v in pq.read_table(p).to_pylist()]
    published = {f.relative_to(batch).as_posix(): f for f in batch.rglob("*.dcm")}
    assert sorted(v["output_path"] for v in verdicts) == sorted(published)
    for v in verdicts:
        assert v["ok"] and v["sha256"] == hashlib.sha256(
            published[v["output_path"]].read_bytes()).hexdigest()
    assert _mode(ws) == 0o700 and _mode(data / "runs") == 0o700
    assert {_mode(p) for p in ws.rglob("*") if p.is_file()} == {0o600}
    assert _mode(data / "warehouse") == 0o700
    assert _mode(data / "warehouse" / "dicom_deid.duckdb") == 0o600
    exported = data / "metadata" / "dicom_metadata"
    assert _mode(exported) == 0o700
    assert {_mode(p) for p in exported.rglob("*") if p.is_file()} == {0o600}
    assert _mode(env["dest"] / ".staging") == 0o700


def test_rerunning_changes_nothing(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any]
) -> None:
    data = env["data"]
    counts = {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}") for t in (
        "dicom_metadata", "deid_metadata", "deid_mapping", "deid_runs", "deid_errors")}
    assert dags["dicom_metadata_export"].test(logical_date=EXPORT_RUN).state == "success"
    again = dags[f"dicom_deid__{STUDY}"].test(logical_date=DEID_RUN,
                                              run_conf={"shard_max_files": 4})
    assert again.state == "success"
    assert _tree_digest(first_run["batch"]) == first_run["digest"]
    assert {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}") for t in counts} == counts


class _Webhook(BaseHTTPRequestHandler):
    """Collects the JSON bodies posted to it (the failure notices)."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A local webhook, named by the notification connection the callback posts to."""
    _Webhook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DICOM_DEID_NOTIFY_CONN_ID", "dicom_deid_notify")
    monkeypatch.setenv("AIRFLOW_CONN_DICOM_DEID_NOTIFY", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": server.server_port,
        "schema": "hooks/deid"}))
    yield _Webhook.received
    server.shutdown()
    server.server_close()


def test_a_leak_fails_the_run_before_anything_is_published(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any],
    webhook: list[dict[str, Any]],
) -> None:
    run = dags[f"dicom_deid__{LEAKY}"].test(logical_date=LEAK_RUN)
    from dicom_deid.config.google import load_config
    from dicom_deid.pipeline.deid_steps import batch_id_for

    assert run.state == "failed"
    batch = batch_id_for(LEAK_RUN, LEAKY)
    dest = env["data"] / "deid" / LEAKY
    assert not (dest / batch).exists()
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("publish", -1)] == "upstream_failed"
    assert states[("finish_run", -1)] == "failed"  # it recorded the run, then failed it
    leaked = sorted(i for (t, i), state in states.items()
                    if t == "verify_shard" and state == "failed")
    assert leaked
    verified = [json.loads(p.read_text())
                 for p in (env["data"] / "runs" / batch / "verified").glob("*.json")]
    assert any(not v["ok"] and v["leaks"] > 0 for v in verified)
    # Nothing of the run stays staged on the destination.
    assert not (dest / ".staging" / batch).exists()
    row = _run_row(env["data"], batch)
    assert (row["status"], row["user"], row["project"]) == ("leak", "dag_test", LEAKY)
    assert row["reason"] == "; ".join(f"LeakError in verify_shard[{i}]" for i in leaked)
    assert row["config_sha256"] == load_config(LEAKY_CONFIG).fingerprint()
    # One notice per failed task, naming run, task and exception type, and nothing else.
    texts = sorted(m["text"] for m in webhook)
    assert texts == sorted(
        f"dicom-deid: dicom_deid__{LEAKY} run {run.run_id} failed at task "
        f"verify_shard[{i}]: LeakError" for i in leaked)
    patterns = planted_byte_patterns(env["answer_key"])
    assert not [p for p in patterns for t in texts if p in t.encode()]


def test_a_trigger_cannot_weaken_the_policy_and_the_refusal_is_recorded(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any], tmp_path: Path,
) -> None:
    # Whoever triggers a run may narrow it (a window, a dry run, a priority), never change
    # what or how it de-identifies: a cohort, options, a config, a destination or a key
    # connection in the trigger's conf fail the run before any work, and the run is
    # recorded as failed.
    run = dags[f"dicom_deid__{STUDY}"].test(logical_date=BAD_COHORT_RUN, run_conf={
        "cohort": "no_such_cohort", "config": "/nowhere/config.json",
        "options": ["RetainUIDs", "RetainLongitudinalFullDates"],
        "destination": str(tmp_path / "elsewhere"), "key_conn_id": "weak_key"})
    from dicom_deid.pipeline.deid_steps import batch_id_for

    batch = batch_id_for(BAD_COHORT_RUN, STUDY)
    assert run.state == "failed"
    assert not list(env["dest"].glob(f"{batch}*"))
    assert not (tmp_path / "elsewhere").exists()
    row = _run_row(env["data"], batch)
    assert (row["status"], row["reason"]) == ("failed", "ConfigError in run_cohort")
    assert (row["processed"], row["cohort"], row["user"]) == (0, "patients_with_us", "dag_test")
    assert (row["config_sha256"], row["key_id"], row["project"]) == (None, None, STUDY)


def test_a_trigger_window_wider_than_the_projects_is_refused(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any],
) -> None:
    # The project's cohort window is 2000-01-01..2099-12-31: a run may look at less, never
    # at more (a trigger starting in 1999 is refused before the cohort runs).
    run = dags[f"dicom_deid__{STUDY}"].test(logical_date=WIDE_RUN, run_conf={
        "start_date": "1999-06-01", "end_date": "2022-12-31"})
    from dicom_deid.pipeline.deid_steps import batch_id_for

    batch = batch_id_for(WIDE_RUN, STUDY)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["run_cohort"] == "failed" and states["plan_shards"] == "upstream_failed"
    assert not (env["dest"] / batch).exists()
    assert not (env["data"] / "runs" / batch / "cohort.parquet").exists()
    row = _run_row(env["data"], batch)
    assert (row["status"], row["reason"], row["processed"]) == (
        "failed", "ConfigError in run_cohort", 0)


def test_a_dry_run_verifies_publishes_nothing_and_is_recorded(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any],
) -> None:
    from dicom_deid.pipeline.deid_steps import batch_id_for

    data = env["data"]
    before = {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}")
              for t in ("deid_metadata", "deid_mapping")}
    run = dags[f"dicom_deid__{STUDY}"].test(logical_date=DRY_RUN, run_conf={
        "dry_run": True, "shard_max_files": 4})
    batch = batch_id_for(DRY_RUN, STUDY)
    assert run.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    verified = [i for (t, i), state in states.items()
                if t == "verify_shard" and state == "success"]
    assert len(verified) >= 2  # every shard was de-identified and verified
    for task in ("publish", "load_deid_metadata", "load_mapping", "write_manifest"):
        assert states[(task, -1)] == "skipped", task
    # Nothing published, nothing left staged, nothing loaded.
    assert not (env["dest"] / batch).exists()
    assert not (env["dest"] / ".staging" / batch).exists()
    assert {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}") for t in before} == before
    assert _warehouse_count(
        data, f"SELECT COUNT(*) FROM deid_mapping WHERE run_id = '{batch}'") == 0
    row = _run_row(data, batch)
    assert (row["status"], row["project"]) == ("dry_run", STUDY)
    assert row["processed"] == sum(
        1 for _ in first_run["batch"].rglob("*.dcm"))  # the same cohort as the real run
    # Its identified intermediates went as a successful run's do.
    ws = data / "runs" / batch
    assert not (ws / "instances.parquet").exists() and not (ws / "mapping").exists()


def test_a_bad_project_file_is_an_import_error_naming_the_field(
    env: dict[str, Any], dags: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    folder = tmp_path / "projects"
    folder.mkdir()
    (folder / f"{STUDY}.yaml").write_text(STUDY_YAML)
    (folder / "typo.yaml").write_text(
        "name: typo\ncohort: patients_with_us\n"
        "policy: {options: [CleanDescriptors, RetainUIDz]}\n")
    monkeypatch.setenv("DICOM_DEID_PROJECTS_DIR", str(folder))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    errors = {Path(k).name: v for k, v in bag.import_errors.items()}
    assert list(errors) == ["dicom_deid_projects.py"]
    assert "typo.yaml: policy.options[1]: unknown option 'RetainUIDz'" in errors[
        "dicom_deid_projects.py"]
    # The good project is not published as a DAG alongside a broken one: the whole file
    # fails, so nobody mistakes a half-loaded set of projects for the real one.
    assert not any(d.startswith("dicom_deid__") for d in bag.dags)


def test_a_cohort_that_selects_nothing_is_a_successful_empty_run(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any]
) -> None:
    """A night with nothing new: no shard is planned, an empty batch is published (its
    manifest says 0 images), and the run is recorded as a success with nothing processed
    (not as a failure)."""
    from dicom_deid.pipeline.deid_steps import batch_id_for

    run = dags[f"dicom_deid__{STUDY}"].test(logical_date=EMPTY_RUN, run_conf={
        "start_date": "2001-01-01", "end_date": "2001-12-31"})  # inside the project's window
    assert run.state == "success"
    batch = batch_id_for(EMPTY_RUN, STUDY)
    assert not list((env["dest"] / batch).rglob("*.dcm"))
    manifest = json.loads((env["dest"] / batch / "manifest.json").read_text())
    assert (manifest["image_count"], manifest["study_count"]) == (0, 0)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan_shards"] == "success" and states["finish_run"] == "success"
    row = _run_row(env["data"], batch)
    assert (row["status"], row["processed"], row["failed"]) == ("success", 0, 0)


SHRINK_RUN = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)


def test_a_rerun_with_a_smaller_cohort_leaves_exactly_the_new_batch(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any]
) -> None:
    """The same DAG run again (same logical date: same batch) with a narrower window:
    the published tree, the manifest, the batch's warehouse rows and its run folder hold
    the smaller cohort's instances and nothing of the larger one."""
    from dicom_deid.pipeline.deid_steps import batch_id_for

    data, project = env["data"], dags[f"dicom_deid__{BY_DATE}"]
    dates = sorted({r["d"] for r in _warehouse_rows(
        data, "SELECT StudyDate AS d FROM dicom_metadata WHERE StudyDate IS NOT NULL")})
    assert len(dates) >= 2  # a window of the first date is a strict subset
    assert project.test(logical_date=SHRINK_RUN).state == "success"
    batch = batch_id_for(SHRINK_RUN, BY_DATE)
    dest = data / "deid" / BY_DATE / batch
    before = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.dcm"))
    day = dates[0].isoformat()
    again = project.test(logical_date=SHRINK_RUN,
                         run_conf={"start_date": day, "end_date": day})
    assert again.state == "success"
    after = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.dcm"))
    assert 0 < len(after) < len(before) and set(after) < set(before)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["image_count"] == len(after)
    for table, column in (("deid_mapping", "run_id"), ("deid_metadata", "ingest_run_id")):
        assert _warehouse_count(data, f"SELECT COUNT(*) FROM {table} "
                                      f"WHERE {column} = '{batch}'") == len(after), table
    mapped = {r["output_path"] for r in _warehouse_rows(
        data, f"SELECT output_path FROM deid_mapping WHERE run_id = '{batch}'")}
    assert mapped == set(after)
    verdicts = [v for p in sorted((data / "runs" / batch).glob("verdicts/*.parquet"))
                for v in pq.read_table(p).to_pylist()]
    assert sorted(v["output_path"] for v in verdicts) == after
    assert _run_row(data, batch)["processed"] == len(after)
