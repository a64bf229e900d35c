"""The Airflow DAGs, run for real with ``dag.test()`` on a tiny synthetic landing zone.

Airflow gets its own home (SQLite) in a temporary folder; it is imported only inside
the fixtures, after the environment points at that home. Each ``dag.test()`` costs a
few seconds, so one module-scoped run feeds several assertions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

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


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A migrated Airflow home, a landing zone with known PHI, and the key connection."""
    base = tmp_path_factory.mktemp("pipeline")
    data = base / "data"
    key = generate(data / "landing", patients=3, seed=11, instances_per_series=3, small=True)
    for path in (data / "landing" / "dicom").rglob("*"):
        os.utime(path, (ARRIVED.timestamp(), ARRIVED.timestamp()))
    values = {
        "AIRFLOW_HOME": str(base / "airflow"),
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
        yield {"data": data, "dest": data / "deid", "answer_key": key}  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def dags(env: dict[str, Any]) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    for dag in bag.dags.values():
        for t in dag.tasks:  # a failure must fail now, not wait for a retry delay
            t.retries = 0
    return bag.dags


def _warehouse_count(data: Path, sql: str) -> int:
    from dicom_deid.warehouse.factory import open_warehouse

    with open_warehouse(f"duckdb://{data / 'warehouse' / 'dicom_deid.duckdb'}") as wh:
        return wh.query(sql).column(0)[0].as_py()


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(env: dict[str, Any], dags: dict[str, Any]) -> dict[str, Any]:
    export = dags["dicom_metadata_export"].test(logical_date=EXPORT_RUN)
    deid = dags["dicom_deidentify"].test(
        logical_date=DEID_RUN, run_conf={"shard_max_files": 4})
    from dicom_deid.pipeline.deid_steps import batch_id_for

    batch = env["dest"] / batch_id_for(DEID_RUN)
    return {"export": export, "deid": deid, "batch": batch, "digest": _tree_digest(batch)}


def test_dags_import_with_the_expected_shape(dags: dict[str, Any]) -> None:
    export, deid = dags["dicom_metadata_export"], dags["dicom_deidentify"]
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
    assert deid.get_task("record_run").upstream_task_ids == {"write_manifest"}
    assert deid.get_task("deidentify_shard").is_mapped  # type: ignore[attr-defined]
    assert type(deid.timetable).__name__ == "AssetTriggeredTimetable"
    assert "dicom_metadata" in repr(deid.timetable.asset_condition)


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
    selected = pq.read_table(ws / "instances.parquet").num_rows
    assert 0 < selected <= landed
    assert len(list((ws / "shards").glob("shard-*.parquet"))) >= 2  # really mapped
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
    # The run report counts, per shard, the files the (fast) byte path wrote.
    rows = [line.split("|")[1:-1] for line in (ws / "report.md").read_text().splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    assert sum(int(r[1]) for r in rows) == selected
    assert sum(int(r[2]) for r in rows) >= 0.9 * selected


def test_rerunning_changes_nothing(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any]
) -> None:
    data = env["data"]
    counts = {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}") for t in (
        "dicom_metadata", "deid_metadata", "deid_mapping", "deid_runs")}
    assert dags["dicom_metadata_export"].test(logical_date=EXPORT_RUN).state == "success"
    again = dags["dicom_deidentify"].test(logical_date=DEID_RUN, run_conf={"shard_max_files": 4})
    assert again.state == "success"
    assert _tree_digest(first_run["batch"]) == first_run["digest"]
    assert {t: _warehouse_count(data, f"SELECT COUNT(*) FROM {t}") for t in counts} == counts


def test_a_leak_fails_the_run_before_anything_is_published(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any], tmp_path: Path
) -> None:
    # Keeping StudyDescription (which names the patient) while PatientName is removed, with
    # the residual sweep (which would clean it) explicitly switched off.
    config = tmp_path / "leaky.json"
    config.write_text(json.dumps({
        "dicomTagConfig": {"actions": [{"queries": ["StudyDescription"], "keepTag": {}}]},
        "dicomDeid": {"residualSweep": False}}))
    run = dags["dicom_deidentify"].test(logical_date=LEAK_RUN, run_conf={
        "config": str(config), "options": []})
    from dicom_deid.pipeline.deid_steps import batch_id_for

    assert run.state == "failed"
    batch = batch_id_for(LEAK_RUN)
    assert not (env["dest"] / batch).exists()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["publish"] == "upstream_failed"
    verified = [json.loads(p.read_text())
                 for p in (env["data"] / "runs" / batch / "verified").glob("*.json")]
    assert any(not v["ok"] and v["findings"] > 0 for v in verified)
