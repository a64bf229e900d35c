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
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.parquet as pq
import pydicom
import pytest

from conftest import RESTRICTED_KEY_HEX
from dicom_deid.pipeline.run_record import key_id
from dicom_deid.synth import generate, planted_byte_patterns

# Run apart from the other tests (see the Makefile): Airflow leaves threads behind,
# and the other tests fork worker pools, which is only safe in a single-threaded process.
pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]
VAULT_KEY_HEX = "a7" * 32  # seals the mapping
KEY_HEX = "5f" * 32
ARRIVED = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # landing files' mtime
EXPORT_RUN = datetime(2026, 3, 11, 1, 0, tzinfo=UTC)  # its data interval: Mar 10
DEID_RUN = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
LEAK_RUN = datetime(2026, 3, 13, 9, 0, tzinfo=UTC)
BAD_COHORT_RUN = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
EMPTY_RUN = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
WIDE_RUN = datetime(2026, 3, 16, 9, 0, tzinfo=UTC)
DRY_RUN = datetime(2026, 3, 17, 9, 0, tzinfo=UTC)
DRY = "dry_us"  # BY_DATE's cohort, released by nobody: a dry run has work to do
NIGHTLY = "nightly"  # the same cohort again, scheduled: what a backfill runs
NO_VAULT = "no_vault"  # BY_DATE's cohort under a vault connection that does not exist
NO_VAULT_RUN = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
STUDY = "us_research"  # the project most tests run: privacy-first, a wide cohort window
LEAKY = "leaky"  # a project whose own policy file keeps a text that names the patient
STUDY_YAML = """
name: us_research
description: Every patient with an ultrasound.
cohort: patients_with_us
cohort_params: {start_date: 2000-01-01, end_date: 2099-12-31}
review: none  # these tests run the DAG with no one to answer (tests/airflow/test_review_ui.py does)
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
review: none
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
review: none
"""


def airflow_env(base: Path, projects: Path, data: Path, landing: Path | str,
                key_hex: str = KEY_HEX) -> dict[str, str]:
    """The environment of a test deployment: an Airflow home under ``base``, our DAGs and
    ``projects``, the data folder and landing zone, and the three key connections (the
    restricted key's is the one the tests' own warehouse handles use too)."""
    return {
        "AIRFLOW_HOME": str(base / "airflow"),
        "DICOM_DEID_PROJECTS_DIR": str(projects),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DICOM_DEID_DATA_DIR": str(data),
        "DICOM_DEID_LANDING": str(landing),
        "DICOM_DEID_WORKERS": "2",
        "AIRFLOW_CONN_DICOM_DEID_KEY": json.dumps({"conn_type": "generic",
                                                    "password": key_hex}),
        "AIRFLOW_CONN_DICOM_DEID_VAULT_KEY": json.dumps({"conn_type": "generic",
                                                          "password": VAULT_KEY_HEX}),
        "AIRFLOW_CONN_DICOM_DEID_RESTRICTED_KEY": json.dumps({"conn_type": "generic",
                                                               "password": RESTRICTED_KEY_HEX}),
    }


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
    (projects / f"{DRY}.yaml").write_text(BY_DATE_YAML.replace(f"name: {BY_DATE}", f"name: {DRY}"))
    (projects / f"{NIGHTLY}.yaml").write_text(STUDY_YAML.replace(
        f"name: {STUDY}", f"name: {NIGHTLY}") + "schedule: '0 3 * * *'\n")
    (projects / f"{LEAKY}.yaml").write_text(LEAKY_YAML)
    (projects / "leaky.json").write_text(json.dumps(LEAKY_CONFIG))
    (projects / f"{BY_DATE}.yaml").write_text(BY_DATE_YAML)
    (projects / f"{NO_VAULT}.yaml").write_text(BY_DATE_YAML.replace(
        f"name: {BY_DATE}", f"name: {NO_VAULT}") + "vault_key_conn_id: no_such_vault\n")
    (projects / "studies_in_window.sql").write_text(BY_DATE_SQL)
    values = airflow_env(base, projects, data, data / "landing" / "dicom")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, v)
        mp.delenv("DICOM_DEID_RESTRICTED_KEY")  # the DAGs take it from their connection
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


def _ledger_rows(data: Path, project: str) -> list[dict[str, Any]]:
    """``project``'s deid_ledger rows, opened with the vault key (the DAG stores their
    pseudonymous side encrypted), ordered by landing file and batch."""
    from dicom_deid.vault.columns import open_ledger

    return open_ledger(_warehouse_rows(data, "SELECT * FROM deid_ledger WHERE project = "
                                             f"'{project}' ORDER BY source_uri, batch_id"),
                       bytes.fromhex(VAULT_KEY_HEX))


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

    tree = env["dest"]
    return {"export": export, "deid": deid, "batch": batch_id_for(DEID_RUN, STUDY),
            "tree": tree, "digest": _tree_digest(tree)}


def _staging(env: dict[str, Any], project: str) -> Path:
    return env["data"] / "deid" / f".staging-{project}"


def _shows(tree: Path, batch: str) -> bool:
    """Whether the project's tree is ``batch``'s release now."""
    return tree.is_symlink() and Path(os.readlink(tree)).name == batch


def test_dags_import_with_the_expected_shape(dags: dict[str, Any]) -> None:
    from dicom_deid.airflow.tasks import RUN_PARAMS, notify_failure

    # One DAG per project file, and nothing else.
    assert set(dags) == {"dicom_metadata_export", f"dicom_deid__{STUDY}", f"dicom_deid__{LEAKY}",
                         f"dicom_deid__{BY_DATE}", f"dicom_deid__{DRY}",
                         f"dicom_deid__{NIGHTLY}", f"dicom_deid__{NO_VAULT}",
                         "dicom_deid_withdraw", "dicom_deid_reidentify"}
    export, deid = dags["dicom_metadata_export"], dags[f"dicom_deid__{STUDY}"]
    # The DAG declares only params that narrow a run (the engine refuses any other).
    assert {"start_date", "end_date", "dry_run", "priority"} <= set(deid.params) <= RUN_PARAMS
    assert not {"cohort", "cohort_params", "options", "config"} & set(deid.params)
    assert set(export.task_ids) == {"export_landing", "load_metadata"}
    assert export.get_task("load_metadata").upstream_task_ids == {"export_landing"}
    assert [o.name for o in export.get_task("load_metadata").outlets] == ["dicom_metadata"]
    assert type(export.timetable).__name__ == "CronDataIntervalTimetable"
    chain = ["run_cohort", "write_filter_file", "resolve_instances", "plan_shards",
             "deidentify_shard", "verify_shard", "publish", "load_mapping", "load_deid_metadata"]
    for up, down in itertools.pairwise(chain):
        assert deid.get_task(down).upstream_task_ids == {up}, down
    # One task records every run, after every other task, whatever happened.
    finish = deid.get_task("finish_run")
    assert finish.is_teardown and finish.on_failure_fail_dagrun
    assert finish.get_flat_relative_ids(upstream=True) == set(deid.task_ids) - {"finish_run"}
    assert {"deidentify_shard", "verify_shard", "publish", "load_deid_metadata"
            } <= finish.upstream_task_ids  # whatever stops where, it runs last
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
    data, batch, tree = env["data"], first_run["batch"], first_run["tree"]
    key = env["answer_key"]
    landed = len(key.files)
    assert _warehouse_count(data, "SELECT COUNT(*) FROM dicom_metadata") == landed
    # The default cohort selects every patient with an ultrasound study.
    ws = data / "runs" / batch
    plan = json.loads((ws / "shards" / "plan.json").read_text())
    selected = sum(s["files"] for s in plan)
    assert 0 < selected <= landed
    assert len(plan) >= 2  # really mapped
    assert _shows(tree, batch)
    files = sorted(tree.rglob("*.dcm"))
    assert len(files) == selected
    patterns = planted_byte_patterns(key)
    for f in files:
        content = f.read_bytes()
        assert not [p for p in patterns if p in content], f.name
    assert _warehouse_count(data, "SELECT COUNT(*) FROM deid_metadata") == selected
    assert _warehouse_count(data, "SELECT COUNT(*) FROM deid_mapping") == selected
    # The mapping reached the warehouse with its identifying columns encrypted under the
    # project's vault key (the connection dicom_deid_vault_key), its pseudonyms in clear.
    from dicom_deid.vault.columns import MAPPING_IDENTIFYING, is_encrypted

    mapped = _warehouse_rows(data, "SELECT * FROM deid_mapping")
    assert all(is_encrypted(r[c]) for r in mapped for c in MAPPING_IDENTIFYING if r[c])
    assert not any(is_encrypted(r["sop_uid"]) for r in mapped)
    assert _warehouse_count(data, "SELECT COUNT(*) FROM deid_runs WHERE processed = "
                                  f"{selected} AND status = 'success'") == 1
    manifest = json.loads((tree / "manifests" / f"{batch}.json").read_text())
    assert manifest["batch_id"] == batch
    assert manifest["priority"] == "routine"
    assert manifest["image_count"] == selected
    assert manifest["added"] == sorted(f.relative_to(tree).as_posix() for f in files)
    assert (manifest["replaced"], manifest["removed"], manifest["withdrawn"]) == ([], [], [])
    studies = {p.parent.parent.name for p in files}
    assert manifest["study_count"] == len(studies)
    assert {s["study_uid"] for s in manifest["studies"]} == studies
    ledger = sorted(({k: r[k] for k in ("output_path", "status", "batch_id")}
                     for r in _ledger_rows(data, STUDY)), key=lambda r: r["output_path"])
    assert ledger == [{"output_path": p, "status": "released", "batch_id": batch}
                      for p in manifest["added"]]
    assert not (_staging(env, STUDY) / batch).exists()
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
    data, batch, tree = env["data"], first_run["batch"], first_run["tree"]
    row = _run_row(data, batch)
    assert (row["status"], row["reason"], row["user"]) == ("success", None, "dag_test")
    assert row["key_id"] == key_id(bytes.fromhex(KEY_HEX)) and KEY_HEX[:16] != row["key_id"]
    # The fingerprint an auditor joins on: the outputs name its first 16 hex digits.
    methods = {v for f in sorted(tree.rglob("*.dcm"))[:5]
               for v in pydicom.dcmread(f, stop_before_pixels=True).DeidentificationMethod}
    named = {m.split()[-1] for m in methods if m.startswith("config sha256 ")}
    assert named == {row["config_sha256"][:16]} and len(row["config_sha256"]) == 64
    manifest = json.loads((tree / "manifests" / f"{batch}.json").read_text())
    assert manifest["deidentification"]["config_sha256"] == row["config_sha256"]
    # Identified intermediates are gone; what is left holds counts and the gate's verdicts
    # (pseudonymous paths, hashes), privately.
    ws = data / "runs" / batch
    left = sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*") if p.is_file())
    assert "report.md" in left and "shards/plan.json" in left
    assert all(re.fullmatch(r"(report\.md|policy\.json|shards/plan\.json|(deidentified|verified)/"
                            r"shard-\d+\.json|verdicts/shard-\d+\.parquet)", name)
               for name in left), left
    verdicts = [v for p in sorted(ws.glob("verdicts/*.parquet"))
                for v in pq.read_table(p).to_pylist()]
    published = {f.relative_to(tree).as_posix(): f for f in tree.rglob("*.dcm")}
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
    assert _mode(_staging(env, STUDY)) == 0o700
    # The report says what the night selected and released (counts only).
    report = (ws / "report.md").read_text()
    assert (f"Released: {len(published)} added, 0 replaced, 0 removed, 0 kept out as "
            "withdrawn earlier") in report


def test_rerunning_changes_nothing(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any]
) -> None:
    data = env["data"]
    counts = {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}") for t in (
        "dicom_metadata", "deid_metadata", "deid_mapping", "deid_runs", "deid_errors")}
    released = _run_row(data, first_run["batch"])
    report = (data / "runs" / first_run["batch"] / "report.md").read_text()
    assert dags["dicom_metadata_export"].test(logical_date=EXPORT_RUN).state == "success"
    again = dags[f"dicom_deid__{STUDY}"].test(logical_date=DEID_RUN,
                                              run_conf={"shard_max_files": 4})
    assert again.state == "success"
    assert _tree_digest(first_run["tree"]) == first_run["digest"]
    assert _shows(first_run["tree"], first_run["batch"])
    assert {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}") for t in counts} == counts
    # The batch's row and report are the record of its release: a rerun that released
    # nothing more leaves them as they were.
    assert _run_row(data, first_run["batch"]) == released
    assert (data / "runs" / first_run["batch"] / "report.md").read_text() == report


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
    assert not dest.exists()  # no release of the project's tree
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
    assert not (_staging(env, LEAKY) / batch).exists()
    assert _warehouse_count(env["data"], "SELECT COUNT(*) FROM deid_ledger "
                                         f"WHERE project = '{LEAKY}'") == 0
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


HELD = "held"  # LEAKY's policy in a project of its own, which then holds sources back
HELD_RUNS = (datetime(2026, 3, 20, 9, 0, tzinfo=UTC), datetime(2026, 3, 21, 9, 0, tzinfo=UTC))


def test_a_project_holds_back_what_the_gate_rejected_and_releases_the_rest(
    env: dict[str, Any], first_run: dict[str, Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The steward's way out of a batch the gate fails every night: the report names
    the rejected sources by content hash; the project file holds them back (reviewed and
    committed like its policy); the next run releases the rest, and none of them."""
    from airflow.dag_processing.dagbag import DagBag

    from dicom_deid.pipeline.deid_steps import batch_id_for

    folder = tmp_path / "projects"
    folder.mkdir()
    (folder / "leaky.json").write_text(json.dumps(LEAKY_CONFIG))
    project = LEAKY_YAML.replace(f"name: {LEAKY}", f"name: {HELD}")
    (folder / f"{HELD}.yaml").write_text(project)
    monkeypatch.setenv("DICOM_DEID_PROJECTS_DIR", str(folder))

    def run(logical_date: datetime) -> Any:
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert bag.import_errors == {}
        dag = bag.dags[f"dicom_deid__{HELD}"]
        for t in dag.tasks:
            t.retries = 0
        return dag.test(logical_date=logical_date)

    assert run(HELD_RUNS[0]).state == "failed"
    report = (env["data"] / "runs" / batch_id_for(HELD_RUNS[0], HELD) / "report.md"
              ).read_text()
    held = sorted(set(re.findall(r"\(source sha256 ([0-9a-f]{64})\)", report)))
    by_hash = {hashlib.sha256(p.read_bytes()).hexdigest(): str(p)
               for p in (env["data"] / "landing" / "dicom").rglob("*") if p.is_file()}
    assert held and set(held) <= set(by_hash)  # landing files, named by their content
    (folder / f"{HELD}.yaml").write_text(project + "hold_back:\n" + "".join(
        f"  - {{source_sha256: {h}, reason: 'gate: StudyDescription kept (TEST-1)'}}\n"
        for h in held))

    second = run(HELD_RUNS[1])
    assert second.state == "success"
    batch = batch_id_for(HELD_RUNS[1], HELD)
    assert _run_row(env["data"], batch)["status"] == "success"
    released = {r["source_uri"] for r in _ledger_rows(env["data"], HELD)}
    assert not released & {by_hash[h] for h in held}
    assert f"{len(held)} new or changed instance(s) held back" in (
        env["data"] / "runs" / batch / "report.md").read_text()


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
    assert _shows(env["dest"], first_run["batch"])
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
    assert _shows(env["dest"], first_run["batch"])
    assert not (env["data"] / "runs" / batch / "cohort.parquet").exists()
    row = _run_row(env["data"], batch)
    assert (row["status"], row["reason"], row["processed"]) == (
        "failed", "ConfigError in run_cohort", 0)


def test_a_project_without_a_vault_key_publishes_nothing(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any],
) -> None:
    """The mapping is never written in clear by a DAG: no vault key, no run."""
    from dicom_deid.pipeline.deid_steps import batch_id_for

    run = dags[f"dicom_deid__{NO_VAULT}"].test(logical_date=NO_VAULT_RUN)
    batch = batch_id_for(NO_VAULT_RUN, NO_VAULT)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["deidentify_shard"] == "failed" and states["publish"] == "upstream_failed"
    row = _run_row(env["data"], batch)
    assert row["status"] == "failed" and "deidentify_shard" in row["reason"]
    assert not (env["data"] / "deid" / NO_VAULT).exists()
    staging = _staging(env, NO_VAULT) / batch
    assert not staging.exists() or not any(staging.rglob("*.dcm"))
    assert not list((env["data"] / "runs" / batch).glob("mapping/*.parquet"))


def test_a_dry_run_verifies_publishes_nothing_and_is_recorded(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any],
) -> None:
    from dicom_deid.pipeline.deid_steps import batch_id_for

    data = env["data"]
    before = {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}")
              for t in ("deid_metadata", "deid_mapping")}
    run = dags[f"dicom_deid__{DRY}"].test(logical_date=DRY_RUN, run_conf={
        "dry_run": True, "shard_max_files": 4})
    batch = batch_id_for(DRY_RUN, DRY)
    assert run.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    verified = [i for (t, i), state in states.items()
                if t == "verify_shard" and state == "success"]
    assert len(verified) >= 2  # every shard was de-identified and verified
    for task in ("publish", "load_deid_metadata", "load_mapping"):
        assert states[(task, -1)] == "skipped", task
    # Nothing published, nothing left staged, nothing loaded or put in the ledger.
    assert not (data / "deid" / DRY).exists()
    assert not (_staging(env, DRY) / batch).exists()
    assert _warehouse_count(data, f"SELECT COUNT(*) FROM deid_ledger WHERE project = '{DRY}'"
                            ) == 0
    assert {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}") for t in before} == before
    assert _warehouse_count(
        data, f"SELECT COUNT(*) FROM deid_mapping WHERE run_id = '{batch}'") == 0
    row = _run_row(data, batch)
    assert (row["status"], row["project"]) == ("dry_run", DRY)
    # It de-identified (or failed on) every instance of the cohort, as a real run would.
    selected = re.search(r"Selected: (\d+) of the cohort's (\d+) instance",
                         (data / "runs" / batch / "report.md").read_text())
    assert selected and selected[1] == selected[2]
    assert row["processed"] > 0 and row["processed"] + row["failed"] == int(selected[1])
    # Its identified intermediates went as a successful run's do.
    ws = data / "runs" / batch
    assert not (ws / "instances.parquet").exists() and not (ws / "mapping").exists()


def test_a_rerun_with_a_smaller_cohort_leaves_exactly_the_new_batch(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any],
) -> None:
    """The dry run's batch run again (same logical date: same batch), for real and with a
    narrower window: its release, manifest, ledger and warehouse rows and its run folder
    hold the smaller cohort's instances and nothing of the larger one."""
    from dicom_deid.pipeline.deid_steps import batch_id_for

    data, batch = env["data"], batch_id_for(DRY_RUN, DRY)
    larger = _run_row(data, batch)["processed"]  # what the dry run de-identified
    day = min(r["d"] for r in _warehouse_rows(
        data, "SELECT StudyDate AS d FROM dicom_metadata WHERE StudyDate IS NOT NULL")
              ).isoformat()
    run = dags[f"dicom_deid__{DRY}"].test(logical_date=DRY_RUN, run_conf={
        "start_date": day, "end_date": day, "shard_max_files": 4})
    assert run.state == "success"
    tree = data / "deid" / DRY
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.dcm"))
    assert 0 < len(files) < larger and _shows(tree, batch)
    manifest = json.loads((tree / "manifests" / f"{batch}.json").read_text())
    assert manifest["added"] == files and _run_row(data, batch)["processed"] == len(files)
    for table, column in (("deid_mapping", "run_id"), ("deid_ledger", "batch_id")):
        assert _warehouse_count(data, f"SELECT COUNT(*) FROM {table} WHERE {column} = "
                                      f"'{batch}' AND output_path != ''") == len(files), table
    assert _warehouse_count(data, "SELECT COUNT(*) FROM deid_metadata "
                                  f"WHERE source_uri LIKE '{tree}/%'") == len(files)
    ws = data / "runs" / batch
    verdicts = [v for p in sorted(ws.glob("verdicts/*.parquet"))
                for v in pq.read_table(p).to_pylist()]
    assert sorted(v["output_path"] for v in verdicts) == files
    shards = json.loads((ws / "shards" / "plan.json").read_text())
    assert sorted(p.name for p in (ws / "verified").glob("*.json")) == sorted(
        f"shard-{s['shard']:05d}.json" for s in shards)


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
    """A night with nothing to release: no shard is planned, no release is made (the tree
    is the last one), and the run is recorded as a success with nothing processed (not as
    a failure)."""
    from dicom_deid.pipeline.deid_steps import batch_id_for

    run = dags[f"dicom_deid__{STUDY}"].test(logical_date=EMPTY_RUN, run_conf={
        "start_date": "2001-01-01", "end_date": "2001-12-31"})  # inside the project's window
    assert run.state == "success"
    batch = batch_id_for(EMPTY_RUN, STUDY)
    assert _shows(env["dest"], first_run["batch"])
    assert not (env["dest"] / "manifests" / f"{batch}.json").exists()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan_shards"] == "success" and states["finish_run"] == "success"
    row = _run_row(env["data"], batch)
    assert (row["status"], row["processed"], row["failed"]) == ("success", 0, 0)


NIGHT1 = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
NIGHT2_EXPORT = datetime(2026, 3, 19, 1, 0, tzinfo=UTC)  # its data interval: Mar 18
NIGHT2 = datetime(2026, 3, 19, 9, 0, tzinfo=UTC)
BACKFILL = [datetime(2026, 3, 20, tzinfo=UTC), datetime(2026, 3, 21, tzinfo=UTC)]


def _ledger(data: Path, project: str) -> list[dict[str, Any]]:
    return [{k: r[k] for k in ("source_uri", "output_path", "status", "batch_id",
                               "output_sha256")} for r in _ledger_rows(data, project)]


def _dicom_files(tree: Path) -> dict[str, str]:
    return {k: v for k, v in _tree_digest(tree).items() if k.endswith(".dcm")}


def test_two_nights_release_only_what_is_new_or_changed_and_catch_a_late_file(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any], tmp_path: Path
) -> None:
    """Night 1 releases the cohort. Before night 2 one landing file is re-sent with
    corrected content and one file arrives late, copied with its original (old) mtime:
    night 2's export catches it, and night 2 de-identifies exactly those two; the tree
    holds one current version of each instance, the manifest says what changed, the
    ledger keeps the replaced version as superseded."""
    from dicom_deid.pipeline.deid_steps import batch_id_for

    data, project = env["data"], dags[f"dicom_deid__{BY_DATE}"]
    tree = data / "deid" / BY_DATE
    assert project.test(logical_date=NIGHT1).state == "success"
    night1, n1 = _dicom_files(tree), batch_id_for(NIGHT1, BY_DATE)
    rows1 = _ledger(data, BY_DATE)
    released1 = [r for r in rows1 if r["status"] == "released"]
    assert len(released1) == len(night1) > 0
    # The inputs the duplicate rule set aside are handled too (no later night takes them).
    assert all(r["status"] == "superseded" and not r["output_path"]
               for r in rows1 if r not in released1)
    # Re-sent with corrected content (a new mtime, in night 2's interval).
    changed = released1[0]["source_uri"]
    ds = pydicom.dcmread(changed)
    ds.StudyDescription = "corrected"
    ds.save_as(changed)
    moment = (NIGHT2_EXPORT - timedelta(hours=12)).timestamp()
    os.utime(changed, (moment, moment))
    # Arrived late: a copy that kept its original mtime, days before night 1.
    extra = generate(tmp_path / "late", patients=1, seed=23, instances_per_series=1,
                     small=True)
    source = next(tmp_path / "late" / "dicom" / f.path for f in extra.files
                  if f.modality not in ("US", "OT") and not f.burned_in)
    late = data / "landing" / "dicom" / "late" / "IM_LATE"
    late.parent.mkdir()
    shutil.copy2(source, late)
    old = (ARRIVED - timedelta(days=3)).timestamp()
    os.utime(late, (old, old))
    assert dags["dicom_metadata_export"].test(logical_date=NIGHT2_EXPORT).state == "success"
    assert _warehouse_count(data, "SELECT COUNT(*) FROM dicom_metadata "
                                  f"WHERE source_uri = '{late}'") == 1
    assert project.test(logical_date=NIGHT2).state == "success"
    n2 = batch_id_for(NIGHT2, BY_DATE)
    processed = [json.loads(p.read_text())["processed"]
                 for p in (data / "runs" / n2 / "deidentified").glob("*.json")]
    assert sum(processed) == 2  # only the new and the changed file
    night2 = _dicom_files(tree)
    added = sorted(set(night2) - set(night1))
    differs = sorted(p for p in night1 if night2.get(p) != night1[p])
    assert len(added) == 1 and len(differs) == 1 and set(night1) <= set(night2)
    manifest = json.loads((tree / "manifests" / f"{n2}.json").read_text())
    assert (manifest["added"], manifest["replaced"], manifest["removed"]) == (
        added, differs, [])
    rows2 = _ledger(data, BY_DATE)
    assert [(r["batch_id"], r["status"]) for r in rows2 if r["source_uri"] == changed] == [
        (n1, "superseded"), (n2, "released")]
    assert [(r["batch_id"], r["status"], r["output_path"]) for r in rows2
            if r["source_uri"] == str(late)] == [(n2, "released", added[0])]
    released = {r["output_path"]: r["output_sha256"] for r in rows2 if r["status"] == "released"}
    assert released == night2  # the ledger is the tree
    uris = {r["u"] for r in _warehouse_rows(
        data, f"SELECT source_uri AS u FROM deid_metadata WHERE source_uri LIKE '{tree}/%'")}
    assert uris == {f"{tree}/{p}" for p in night2}  # one row per file of the tree


def test_a_backfill_of_two_past_intervals_releases_once_and_reruns_change_nothing(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any]
) -> None:
    """What ``airflow backfill create`` runs for a scheduled project: one run per past
    interval. The first releases the cohort, the second finds nothing new; clearing and
    rerunning the first gives the same ledger, files and rows."""
    from dicom_deid.pipeline.deid_steps import batch_id_for

    data, project = env["data"], dags[f"dicom_deid__{NIGHTLY}"]
    assert type(project.timetable).__name__ in ("CronTriggerTimetable", "CronDataIntervalTimetable")
    tree = data / "deid" / NIGHTLY
    runs = [project.test(logical_date=day) for day in BACKFILL]
    assert [r.state for r in runs] == ["success", "success"]
    first, second = (batch_id_for(day, NIGHTLY) for day in BACKFILL)
    assert _shows(tree, first) and not (tree / "manifests" / f"{second}.json").exists()
    assert (_run_row(data, first)["processed"], _run_row(data, second)["processed"]) == (
        len(_dicom_files(tree)), 0)
    before = (_ledger(data, NIGHTLY), _tree_digest(tree), _warehouse_count(
        data, f"SELECT COUNT(*) FROM deid_metadata WHERE source_uri LIKE '{tree}/%'"))
    assert project.test(logical_date=BACKFILL[0]).state == "success"
    after = (_ledger(data, NIGHTLY), _tree_digest(tree), _warehouse_count(
        data, f"SELECT COUNT(*) FROM deid_metadata WHERE source_uri LIKE '{tree}/%'"))
    assert after == before


def _landing_identifiers(landing: Path) -> set[bytes]:
    """The identifying values of the landing files, read from the files themselves (not
    from the generator's answer key): IDs, accession numbers, UIDs, names, 8+ bytes."""
    out: set[bytes] = set()
    for path in landing.rglob("*"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        for kw in ("PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID",
                   "SOPInstanceUID", "PatientName", "OtherPatientIDs"):
            value = str(ds.get(kw, "") or "")
            if len(value) >= 8:
                out.add(value.encode())
    return out


def test_no_original_identifier_outside_the_catalog_and_the_landing_zone(
    env: dict[str, Any], first_run: dict[str, Any],
) -> None:
    # Every byte the deployment wrote -- the exported catalog and its manifest, warehouse
    # files, run folders, the research tree's manifests, Airflow's database and task logs
    # -- holds no original identifier in the clear, except: the landing zone itself, and
    # the run folders (0700) of runs that did not succeed and that no later run of their
    # project did: they keep their cohort and shard lists so that clearing the failed
    # task reruns it (a later success of the project removes them).
    data, airflow_home = env["data"], Path(os.environ["AIRFLOW_HOME"])
    originals = _landing_identifiers(data / "landing")
    assert len(originals) > 20
    runs = sorted(_warehouse_rows(data, "SELECT run_id, status FROM deid_runs"),
                  key=lambda r: r["run_id"])
    assert all(r["run_id"].startswith("batch-") for r in runs)
    project = {r["run_id"]: r["run_id"].split("Z-", 1)[1] for r in runs}
    kept = [data / "runs" / r["run_id"] for i, r in enumerate(runs)
            if r["status"] not in ("success", "dry_run") and not any(
                later["status"] == "success" and project[later["run_id"]] ==
                project[r["run_id"]] for later in runs[i + 1:])]
    assert len(kept) < len(runs)
    skipped = (data / "landing", *kept)
    searched, found = 0, []
    for root in (data, airflow_home):
        for path in root.rglob("*"):
            if not path.is_file() or any(s in path.parents for s in skipped):
                continue
            if path.suffix == ".dcm" and (data / "deid") in path.parents:
                continue  # the de-identified files: the gate's business, searched above
            content = path.read_bytes()
            searched += 1
            found += [f"{path.relative_to(root)}" for v in originals if v in content]
    assert searched > 10
    assert sorted(set(found)) == []
