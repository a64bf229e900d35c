"""The pipeline's mapping under the vault key: shard mapping files sealed in the run
folder, the warehouse's deid_mapping with its identifying columns encrypted value by
value, re-identification and withdrawal opening them only with the vault key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet
import pytest
from test_deid_steps import _query, _req, _run_steps, _settings, landed

from dicom_deid.cli.main import main
from dicom_deid.pipeline import deid_steps
from dicom_deid.pipeline.deid_steps import RunWorkspace
from dicom_deid.pipeline.ledger import withdrawn_outputs
from dicom_deid.pipeline.withdraw import WithdrawalError, withdraw
from dicom_deid.vault.columns import (
    MAPPING_IDENTIFYING,
    blind_index,
    decrypt_columns,
    decrypt_values,
    is_encrypted,
    open_ledger,
)
from dicom_deid.vault.envelope import VaultError, is_sealed, read_sealed_table
from dicom_deid.warehouse.factory import open_warehouse
from instances import KEY

__all__ = ["landed"]  # the fixture, imported for pytest
VAULT_KEY = bytes(range(200, 232))  # not the pseudonym key (instances.KEY)


@pytest.fixture(scope="module")
def sealed_run(landed: dict[str, Any]) -> dict[str, Any]:
    settings = _settings(landed, "vaulted")
    req = _req(landed, landed["other_modality"], project="vaulted")
    ws = RunWorkspace(settings.work_dir, "batch-vault1")
    _run_steps(ws, settings, req, vault_key=VAULT_KEY)
    files = {ws.mapping(p): ws.mapping(p).read_bytes() for p in ws.shards()}
    return {"settings": settings, "ws": ws, "files": files, "req": req}


def _originals(landed: dict[str, Any]) -> set[str]:
    """Identifying values of the landing files, 6 characters or longer."""
    import pydicom

    out: set[str] = set()
    for row in landed["rows"]:
        try:
            ds = pydicom.dcmread(row["source_uri"], stop_before_pixels=True)
        except Exception:
            continue
        for kw in ("PatientID", "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID",
                   "SeriesInstanceUID"):
            value = str(ds.get(kw, "") or "")
            if len(value) >= 6:
                out.add(value)
    return out


def test_shard_mappings_are_sealed_in_the_run_folder(sealed_run: dict[str, Any],
                                                     landed: dict[str, Any]) -> None:
    assert sealed_run["files"] and all(is_sealed(p) for p in sealed_run["files"])
    originals = _originals(landed)
    for data in sealed_run["files"].values():
        assert not [v for v in originals if v.encode() in data]
    with pytest.raises(VaultError):
        read_sealed_table(next(iter(sealed_run["files"])), KEY)  # not the pseudonym key


def test_deid_mapping_holds_identifying_values_only_encrypted(
        sealed_run: dict[str, Any], landed: dict[str, Any]) -> None:
    rows = _query(sealed_run["settings"],
                  "SELECT * FROM deid_mapping WHERE run_id = 'batch-vault1'")
    assert rows
    originals = _originals(landed)
    for row in rows:
        for column in MAPPING_IDENTIFYING:
            assert row[column] is None or is_encrypted(row[column]), column
        assert not [v for v in originals if v in json.dumps(row, default=str)]
        assert not is_encrypted(row["sop_uid"])  # the pseudonyms stay searchable
    clear = decrypt_columns(pa.Table.from_pylist(rows), VAULT_KEY).to_pylist()
    sources = {r["source_uri"] for r in landed["rows"]}
    assert {r["original_sop_uid"] for r in clear} <= originals
    assert all(any(s.endswith(r["source_path"]) for s in sources) for r in clear)


def test_reidentify_from_the_warehouse_with_the_vault_key(
        sealed_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = sealed_run["settings"]
    row = _query(settings, "SELECT * FROM deid_mapping WHERE run_id = 'batch-vault1' "
                           "ORDER BY sop_uid LIMIT 1")[0]
    vault = tmp_path / "vault.key"
    vault.write_text(VAULT_KEY.hex())
    out, audit = tmp_path / "o.csv", tmp_path / "audit.jsonl"
    url = settings.warehouse
    base = ["reidentify", "--warehouse", url, "--purpose", "follow-up", "--requester", "qa",
            "--audit", str(audit), "--sop-uid", row["sop_uid"], "--out", str(out)]
    assert main([*base, "--vault-key-file", str(vault)]) == 0
    original = decrypt_columns(pa.Table.from_pylist([row]), VAULT_KEY
                               ).to_pylist()[0]["original_sop_uid"]
    assert original in out.read_text()
    wrong = tmp_path / "wrong.key"
    wrong.write_text(KEY.hex())
    assert main([*base, "--vault-key-file", str(wrong)]) == 2
    assert len(audit.read_text().splitlines()) == 1  # the refused lookup left no record


def test_a_withdrawal_opens_the_mapping_with_the_vault_key_only(
        sealed_run: dict[str, Any]) -> None:
    settings = sealed_run["settings"]
    study = sorted({r["study_uid"] for r in open_ledger(_query(
        settings, "SELECT * FROM deid_ledger WHERE project = 'vaulted' "
                  "AND status = 'released'"), VAULT_KEY)})[0]  # encrypted in the table
    with pytest.raises(WithdrawalError, match="needs the vault key"):
        withdraw(settings, "vaulted", "study", study, "consent withdrawn", "alice")
    with pytest.raises(WithdrawalError, match="does not open"):
        withdraw(settings, "vaulted", "study", study, "consent withdrawn", "alice", KEY)
    done = withdraw(settings, "vaulted", "study", study, "consent withdrawn", "alice",
                    VAULT_KEY)
    assert done["status"] == "withdrawn" and done["originals_blocked"] >= 1
    # The withdrawn original is stored encrypted, with its blind index (no clear value).
    (row,) = _query(settings, "SELECT * FROM deid_withdrawals WHERE project = 'vaulted'")
    original = decrypt_values([row["original_value"]], VAULT_KEY, "original_value",
                              [row["original_index"]])[0]
    assert original and original != study and not is_encrypted(original)
    assert row["original_index"] == blind_index(VAULT_KEY, "vaulted|study", original)
    assert original not in json.dumps(row, default=str)
    # A new instance of that study is held back on the index, under the vault key only.
    mapping = [{"output_path": "new/one.dcm", "original_study_uid": original}]
    with open_warehouse(settings.warehouse) as wh:
        assert withdrawn_outputs(wh, "vaulted", mapping, VAULT_KEY) == {"new/one.dcm": "study"}
        assert withdrawn_outputs(wh, "vaulted", mapping, KEY) == {}  # another key: no match
        assert withdrawn_outputs(wh, "other", mapping, VAULT_KEY) == {}  # another project


def test_no_original_identifier_in_mapping_files_or_restricted_tables(
        sealed_run: dict[str, Any], landed: dict[str, Any]) -> None:
    """The byte search of issue 16: every mapping file the run wrote and every row of the
    restricted tables it keeps beside the identified source metadata (deid_mapping,
    deid_ledger, deid_errors, deid_withdrawals, after a withdrawal), searched for the
    landing files' original identifiers."""
    settings, ws = sealed_run["settings"], sealed_run["ws"]
    originals = _originals(landed)
    assert len(originals) > 20
    files = [p for p in ws.root.rglob("*mapping*") if p.is_file()] + list(sealed_run["files"])
    assert files
    for path in files:
        data = path.read_bytes() if path.exists() else sealed_run["files"][path]
        assert not [v for v in originals if v.encode() in data], path.name
    tables = {t: _query(settings, f"SELECT * FROM {t}") for t in (
        "deid_mapping", "deid_ledger", "deid_errors", "deid_withdrawals")}
    assert tables["deid_mapping"] and tables["deid_ledger"] and tables["deid_withdrawals"]
    for table, rows in tables.items():
        text = json.dumps(rows, default=str)
        assert not [v for v in originals if v in text], table


def test_rotating_the_vault_key_of_the_warehouse_mapping(
        sealed_run: dict[str, Any], tmp_path: Path) -> None:
    settings = sealed_run["settings"]
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    old.write_text(VAULT_KEY.hex())
    assert main(["keygen", "--vault", str(new)]) == 0
    before = _query(settings, "SELECT * FROM deid_mapping ORDER BY run_id, sop_uid")
    wrong = tmp_path / "wrong.key"
    wrong.write_text(KEY.hex())
    assert main(["vault", "rotate", "--warehouse", settings.warehouse, "--old-key-file",
                 str(wrong), "--new-key-file", str(new)]) == 2  # nothing opens: unchanged
    assert _query(settings, "SELECT * FROM deid_mapping ORDER BY run_id, sop_uid") == before
    assert main(["vault", "rotate", "--warehouse", settings.warehouse, "--old-key-file",
                 str(old), "--new-key-file", str(new)]) == 0
    after = _query(settings, "SELECT * FROM deid_mapping ORDER BY run_id, sop_uid")
    assert len(after) == len(before) and after != before
    assert [r["sop_uid"] for r in after] == [r["sop_uid"] for r in before]
    from dicom_deid.vault.keys import load_vault_key

    new_key = load_vault_key(new)
    assert decrypt_columns(pa.Table.from_pylist(after), new_key).to_pylist() == \
        decrypt_columns(pa.Table.from_pylist(before), VAULT_KEY).to_pylist()
    with pytest.raises(VaultError):
        decrypt_columns(pa.Table.from_pylist(after), VAULT_KEY)
    # The withdrawal made above: re-encrypted and re-indexed under the new key.
    (row,) = _query(settings, "SELECT * FROM deid_withdrawals WHERE project = 'vaulted'")
    original = decrypt_values([row["original_value"]], new_key, "original_value",
                              [row["original_index"]])[0]
    assert row["original_index"] == blind_index(new_key, f"vaulted|{row['level']}",
                                                str(original))


def test_a_review_is_refused_without_cards_or_after_the_release(
        sealed_run: dict[str, Any]) -> None:
    """The review step's guard: shards made without a review (or whose cards a rejection
    removed) and a batch already released are never approved."""
    from dicom_deid.errors import VerificationError

    ws, settings = sealed_run["ws"], sealed_run["settings"]
    with pytest.raises(VerificationError, match="no review cards"):
        deid_steps.check_reviewable(ws, settings)
    ws.review_root.mkdir(exist_ok=True)
    for plan in ws.shards():  # as a reviewed run's workers leave them
        pa.parquet.write_table(pa.table({"output_path": pa.array([], pa.string())}),
                               ws.review_cards(plan))
    with pytest.raises(VerificationError, match="released already"):
        deid_steps.check_reviewable(ws, settings)
