"""Encrypted identifying columns: bound to their column and row, one key per project's
rows, and the date shift kept out of the warehouse."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from dicom_deid.vault.audit import verify
from dicom_deid.vault.columns import (
    decrypt_columns,
    encrypt_columns,
    is_encrypted,
    rows_under,
)
from dicom_deid.vault.envelope import VaultError
from dicom_deid.vault.reidentify import reidentify

KEY_A, KEY_B = bytes(range(32)), bytes(range(32, 64))


def _mapping(run: str, n: int) -> pa.Table:
    return pa.table({
        "run_id": [run] * n, "sop_uid": [f"2.25.{run}.{i}" for i in range(n)],
        "study_uid": [f"2.25.9{i}" for i in range(n)],
        "patient_id": [f"PSEUDO-{run}-{i}" for i in range(n)],
        "source_path": [f"landing/smith-{i}.dcm" for i in range(n)],
        "original_sop_uid": [f"1.2.840.1.{i}" for i in range(n)],
        "original_patient_id": [f"MRN{i:06d}" for i in range(n)],
        "date_shift_days": pa.array([-17 + i for i in range(n)], pa.int32())})


def test_values_are_bound_to_their_row_and_column() -> None:
    enc = encrypt_columns(_mapping("r1", 2), KEY_A)
    assert all(is_encrypted(v) for v in enc.column("original_patient_id").to_pylist())
    assert enc.column("date_shift_days").null_count == 2  # kept out of the warehouse
    assert decrypt_columns(enc, KEY_A).column("original_patient_id").to_pylist() == [
        "MRN000000", "MRN000001"]
    swapped = enc.set_column(enc.column_names.index("original_patient_id"),
                             "original_patient_id",
                             pa.array(enc.column("original_patient_id").to_pylist()[::-1]))
    with pytest.raises(VaultError, match="another column or row"):
        decrypt_columns(swapped, KEY_A)  # a pseudonym cannot be pointed at another patient
    moved = enc.set_column(enc.column_names.index("original_sop_uid"), "original_sop_uid",
                           enc.column("original_patient_id"))
    with pytest.raises(VaultError, match="another column or row"):
        decrypt_columns(moved, KEY_A)


def test_each_key_opens_its_own_projects_rows(tmp_path: Path) -> None:
    both = pa.concat_tables([encrypt_columns(_mapping("a", 2), KEY_A),
                             encrypt_columns(_mapping("b", 3), KEY_B)])
    assert rows_under(both, KEY_A).num_rows == 2 and rows_under(both, KEY_B).num_rows == 3
    with pytest.raises(VaultError, match="another vault key"):
        decrypt_columns(both, KEY_A)
    audit = tmp_path / "audit-b.jsonl"
    answer = reidentify(rows_under(both, KEY_B), "warehouse", {"patient_id": ["PSEUDO-b-1",
                                                                           "PSEUDO-a-1"]},
                        requester="privacy office", purpose="registry linkage check",
                        vault_key=KEY_B, audit=audit)
    assert answer.rows == [("patient_id", "PSEUDO-b-1", "MRN000001")]
    assert answer.missing == 1  # project a's row is not key B's to open
    assert verify(audit, KEY_B).ok


def test_only_the_rows_asked_for_are_opened(tmp_path: Path) -> None:
    """Another row that does not open (changed, or another key's) does not stop a lookup
    that does not ask for it."""
    enc = encrypt_columns(_mapping("r", 3), KEY_A)
    broken = enc.set_column(enc.column_names.index("original_sop_uid"), "original_sop_uid",
                            pa.array([*enc.column("original_sop_uid").to_pylist()[:2],
                                      "v1.0000000000000000.AAAA"]))
    answer = reidentify(broken, "w", {"sop_uid": ["2.25.r.0"]}, requester="qa",
                        purpose="spot check", vault_key=KEY_A, audit=tmp_path / "a.jsonl")
    assert answer.rows == [("sop_uid", "2.25.r.0", "1.2.840.1.0")]
