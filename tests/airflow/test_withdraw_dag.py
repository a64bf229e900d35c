"""The withdrawal DAG, run for real with ``dag.test()``: one study of the STUDY project's
released tree is withdrawn as the triggering user asked; a request whose reason holds a
date fails and changes nothing.

Airflow's home, the landing zone, the DAG bag and the first release are the fixtures of
``test_dags.py`` (module-scoped: this module gets its own landing zone and warehouse).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_dags import (
    STUDY,
    VAULT_KEY_HEX,
    _ledger_rows,
    _tree_digest,
    _warehouse_rows,
    dags,
    env,
    first_run,
)

pytestmark = pytest.mark.airflow
__all__ = ["dags", "env", "first_run"]  # fixtures this module uses, imported from test_dags
WITHDRAW_RUN = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
REFUSED_RUN = datetime(2026, 4, 3, 9, 0, tzinfo=UTC)
REASON = "consent withdrawn by the participant"


def _state(data: Path, tree: Path) -> tuple[Any, ...]:
    """The tree's release and files, and the rows a withdrawal changes."""
    return (os.readlink(tree), _tree_digest(tree),
            _warehouse_rows(data, "SELECT output_path, status, status_by FROM deid_ledger "
                                  f"WHERE project = '{STUDY}' ORDER BY output_path"),
            _warehouse_rows(data, "SELECT * FROM deid_withdrawals ORDER BY original_value"),
            _warehouse_rows(data, "SELECT source_uri FROM deid_metadata ORDER BY 1"))


def test_the_withdrawal_dag_takes_a_study_out_as_its_triggering_user_asked(
    env: dict[str, Any], dags: dict[str, Any], first_run: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert first_run["deid"].state == "success"
    dag = dags["dicom_deid_withdraw"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual trigger only
    assert set(dag.params) == {"project", "level", "value", "reason"}
    assert dag.task_ids == ["withdraw"]
    data, tree = env["data"], env["dest"]
    before = _tree_digest(tree)
    studies = sorted(p.name for p in tree.iterdir() if p.name != "manifests")
    assert len(studies) >= 2
    study = studies[0]
    gone = sorted(p for p in before if p.startswith(f"{study}/"))
    run = dag.test(logical_date=WITHDRAW_RUN, run_conf={
        "project": STUDY, "level": "study", "value": study, "reason": REASON})
    assert run.state == "success"
    result = run.get_task_instance("withdraw").xcom_pull(task_ids="withdraw")
    assert (result["status"], result["files_removed"]) == ("withdrawn", len(gone))
    wid = result["withdrawal_id"]
    # The tree: the new release, without the study; every other file as it was.
    assert Path(os.readlink(tree)).name == wid
    after = _tree_digest(tree)
    manifest_path = f"manifests/{wid}.json"
    assert {p: d for p, d in after.items() if p != manifest_path} == {
        p: d for p, d in before.items() if p not in gone}
    assert json.loads((tree / manifest_path).read_text())["withdrawn"] == gone
    # The tables: deid_metadata follows the tree; the ledger and deid_withdrawals name
    # the user who triggered the run (dag.test()'s) as the one who asked.
    uris = {r["source_uri"] for r in _warehouse_rows(
        data, f"SELECT source_uri FROM deid_metadata WHERE source_uri LIKE '{tree}/%'")}
    assert uris == {f"{tree}/{p}" for p in after if p.endswith(".dcm")}
    rows = sorted(({k: r[k] for k in ("output_path", "status", "status_by", "status_reason")}
                   for r in _ledger_rows(data, STUDY) if r["study_uid"] == study),
                  key=lambda r: r["output_path"])  # opened: encrypted in the table
    assert rows == [{"output_path": p, "status": "withdrawn", "status_by": "dag_test",
                     "status_reason": REASON} for p in gone]
    (withdrawal,) = _warehouse_rows(data, "SELECT * FROM deid_withdrawals")
    assert (withdrawal["project"], withdrawal["level"], withdrawal["pseudonymous_value"],
            withdrawal["requested_by"], withdrawal["reason"], withdrawal["batch_id"],
            withdrawal["files_removed"]) == (STUDY, "study", study, "dag_test", REASON, wid,
                                             len(gone))
    assert withdrawal["original_value"] != study
    # Stored under the project's vault key (the connection dicom_deid_vault_key), matched
    # on its blind index: no original identifier in clear in the table.
    from dicom_deid.vault.columns import blind_index, decrypt_values, is_encrypted

    assert is_encrypted(withdrawal["original_value"])
    vault = bytes.fromhex(VAULT_KEY_HEX)
    original = decrypt_values([withdrawal["original_value"]], vault, "original_value",
                              [withdrawal["original_index"]])[0]
    assert withdrawal["original_index"] == blind_index(vault, f"{STUDY}|study", str(original))
    # A reason holding a date is refused: the run fails and nothing changes.
    state = _state(data, tree)
    caplog.clear()
    refused = dag.test(logical_date=REFUSED_RUN, run_conf={
        "project": STUDY, "level": "study", "value": studies[1],
        "reason": "consent revoked on 2026-03-05"})
    assert refused.state == "failed"
    assert _state(data, tree) == state
    assert "failed at task withdraw: WithdrawalError" in caplog.text
