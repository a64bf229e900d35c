"""The re-identification DAG, run for real with ``dag.test()``: the originals behind a
released study's pseudonymous UID reach a file only the pipeline's owner reads, after an
audit record names the triggering user and the purpose; XCom carries counts and paths;
a trigger without a purpose fails and audits nothing.

Airflow's home, the landing zone, the DAG bag and the first release are the fixtures of
``test_dags.py`` (module-scoped: this module gets its own landing zone and warehouse).
"""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from test_dags import STUDY, VAULT_KEY_HEX, _warehouse_rows, dags, env, first_run

from dicom_deid.cli.main import main
from dicom_deid.vault.columns import decrypt_columns

pytestmark = pytest.mark.airflow
__all__ = ["dags", "env", "first_run"]  # fixtures this module uses, imported from test_dags
REIDENTIFY_RUN = datetime(2026, 4, 5, 9, 0, tzinfo=UTC)
REFUSED_RUN = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)


def test_the_dag_reidentifies_a_study_for_its_triggering_user_under_audit(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any], tmp_path: Any,
) -> None:
    assert first_run["deid"].state == "success"
    dag = dags["dicom_deid_reidentify"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual trigger only
    assert set(dag.params) == {"project", "kind", "values", "purpose"}
    data = env["data"]
    rows = _warehouse_rows(data, "SELECT * FROM deid_mapping ORDER BY study_uid")
    vault_key = bytes.fromhex(VAULT_KEY_HEX)
    clear = decrypt_columns(pa.Table.from_pylist(rows), vault_key).to_pylist()
    study, original = clear[0]["study_uid"], clear[0]["original_study_uid"]
    run = dag.test(logical_date=REIDENTIFY_RUN, run_conf={
        "project": STUDY, "kind": "study_uid", "values": [study, "2.25.0"],
        "purpose": "tumour board follow-up"})
    assert run.state == "success"
    result = run.get_task_instance("reidentify").xcom_pull(task_ids="reidentify")
    assert (result["asked"], result["found"], result["missing"]) == (2, 1, 1)
    assert original not in json.dumps(result)  # XCom: counts and paths only
    answer = data / "runs" / "reidentified"
    files = list(answer.glob("*.csv"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert f"study_uid,{study},{original}" in files[0].read_text()
    audit = data / "audit" / f"reidentify-{STUDY}.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(records) == 1
    assert (records[0]["requester"], records[0]["purpose"], records[0]["found"]) == (
        result["requester"], "tumour board follow-up", 1)
    assert original not in audit.read_text() and study not in audit.read_text()
    key_file = tmp_path / "vault.key"
    key_file.write_text(VAULT_KEY_HEX)
    assert main(["audit", "verify", str(audit), "--vault-key-file", str(key_file)]) == 0


def test_a_trigger_without_a_purpose_fails_and_audits_nothing(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any],
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    audit = env["data"] / "audit" / f"reidentify-{STUDY}.jsonl"
    before = audit.read_bytes() if audit.exists() else b""
    dag = dags["dicom_deid_reidentify"]
    with pytest.raises(ParamValidationError, match="purpose"):  # refused at the trigger
        dag.test(logical_date=REFUSED_RUN, run_conf={
            "project": STUDY, "kind": "patient_id", "values": ["X"], "purpose": ""})
    run = dag.test(logical_date=REFUSED_RUN, run_conf={  # blank: refused by the task
        "project": STUDY, "kind": "patient_id", "values": ["X"], "purpose": "   "})
    assert run.state == "failed"
    assert (audit.read_bytes() if audit.exists() else b"") == before
