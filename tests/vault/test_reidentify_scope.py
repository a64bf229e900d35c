"""Re-identification for one project looks up that project's own mapping rows only: two
projects whose mappings are under one vault key (the deployment's default) cannot reach
each other's originals through a request made for the other, and the audit of the
request records what was asked and found in that project, naming it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dicom_deid.deid.mapping import MAPPING_COLUMNS
from dicom_deid.errors import KeyConfigError
from dicom_deid.pipeline import ledger
from dicom_deid.vault.audit import verify
from dicom_deid.vault.columns import encrypt_columns
from dicom_deid.vault.reidentify import from_warehouse, reidentify
from dicom_deid.warehouse.duckdb_backend import DuckDBWarehouse

VAULT = bytes(range(32))  # one vault key for both projects
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: project -> (its batch, its patient's pseudonym, that patient's original MRN)
PROJECTS = {"p10": ("batch-20260101T020000Z-p10", "P10PSEUDONYMAAAA", "MRN7734521"),
            "p11": ("batch-20260101T030000Z-p11", "P11PSEUDONYMBBBB", "MRN7734521")}


def _mapping(n: int, batch: str, pseudonym: str, original: str) -> pa.Table:
    """One output of ``batch``: the same patient in both projects (n tells them apart)."""
    row: dict[str, object] = {name: None for name, _ in MAPPING_COLUMNS}
    row.update(run_id=batch, source_path=f"/landing/{n}/a.dcm", output_path="s/se/i.dcm",
               original_study_uid=f"1.2.3.{n}", original_series_uid=f"1.2.3.{n}.1",
               original_sop_uid=f"1.2.3.{n}.1.1", original_patient_id=original,
               study_uid=f"2.25.1{n}", series_uid=f"2.25.2{n}", sop_uid=f"2.25.3{n}",
               patient_id=pseudonym, date_shift_days=-10, redacted_boxes=0)
    schema = pa.schema([(n, getattr(pa, k)()) for n, k in MAPPING_COLUMNS])
    return pa.Table.from_pylist([row], schema=schema)


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    """Two projects' batches, each with its ledger rows and its mapping rows, the
    mapping's identifying columns encrypted under the one vault key."""
    wh = DuckDBWarehouse(":memory:")
    wh.ensure_schema()
    for n, (project, (batch, pseudonym, original)) in enumerate(PROJECTS.items()):
        path = tmp_path / f"{batch}.parquet"
        pq.write_table(encrypt_columns(_mapping(n, batch, pseudonym, original), VAULT), path)
        wh.load_parquet("deid_mapping", str(path), mode="replace_partition")
        ledger.write_rows(wh, [ledger.LedgerRow(
            project, f"/landing/{n}/a.dcm", "h", f"2.25.1{n}", f"2.25.2{n}", f"2.25.3{n}",
            pseudonym, "s/se/i.dcm", "o", "c", "k", batch, T0)], VAULT)
    return wh


def test_another_projects_pseudonym_is_not_found_and_the_audit_says_so(
        warehouse: DuckDBWarehouse, tmp_path: Path) -> None:
    _, mine, original = PROJECTS["p10"]
    _, theirs, _ = PROJECTS["p11"]
    table, source = from_warehouse(warehouse, VAULT, "warehouse:deid_mapping", project="p10")
    assert source == "warehouse:deid_mapping (project p10)"
    audit = tmp_path / "reidentify-p10.jsonl"
    answer = reidentify(table, source, {"patient_id": [theirs]}, requester="privacy office",
                        purpose="follow-up of a safety finding", vault_key=VAULT, audit=audit)
    assert (answer.rows, answer.found, answer.missing) == ([], 0, 1)
    answer = reidentify(table, source, {"patient_id": [mine, theirs]},
                        requester="privacy office", purpose="follow-up of a safety finding",
                        vault_key=VAULT, audit=audit)
    assert answer.rows == [("patient_id", mine, original)] and answer.missing == 1
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["kinds"], r["found"], r["source"]) for r in records] == [
        ({"patient_id": 1}, 0, source), ({"patient_id": 2}, 1, source)]
    assert original not in audit.read_text() and theirs not in audit.read_text()
    assert verify(audit, VAULT).ok
    # The other project's own request finds its own pseudonym.
    table, source = from_warehouse(warehouse, VAULT, "warehouse:deid_mapping", project="p11")
    answer = reidentify(table, source, {"patient_id": [theirs, mine]},
                        requester="privacy office", purpose="registry linkage check",
                        vault_key=VAULT, audit=tmp_path / "reidentify-p11.jsonl")
    assert answer.rows == [("patient_id", theirs, original)] and answer.missing == 1


def test_a_project_without_mapping_rows_is_refused_naming_no_value(
        warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(KeyConfigError, match="no deid_mapping row of project p12"):
        from_warehouse(warehouse, VAULT, "warehouse:deid_mapping", project="p12")
    with pytest.raises(KeyConfigError, match="project must be a project name"):
        from_warehouse(warehouse, VAULT, "warehouse:deid_mapping", project="p10' OR '1'='1")
    # Without a project (the command line's --warehouse): every row under the key.
    table, _ = from_warehouse(warehouse, VAULT, "warehouse:deid_mapping")
    assert table.num_rows == 2
