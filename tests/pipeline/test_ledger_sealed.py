"""The release ledger under the vault key: a run with a vault key stores the ledger's
pseudonymous side (UIDs, patient ID, tree path, file hash) only encrypted, bound to its
column and row, with blind indexes to look rows up by; withdrawal, a second night's
superseding and ``vault rotate`` work through them; a ledger kept in clear still reads,
and rotation encrypts it. The warehouse-level behaviour runs on DuckDB and on the
BigQuery emulator alike.

The landing zone and run helpers are ``test_deid_steps``'s (module-scoped: this module
gets its own landing zone and warehouse); the vault key and the originals' helper are
``test_sealed_mapping``'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from test_deid_steps import DAY1, _query, _req, _run_steps, _settings, landed, resend_corrected
from test_sealed_mapping import VAULT_KEY, _originals

from dicom_deid.cli.main import main
from dicom_deid.pipeline import ledger
from dicom_deid.pipeline.deid_steps import RunWorkspace
from dicom_deid.pipeline.withdraw import WithdrawalError, withdraw
from dicom_deid.vault.columns import (
    LEDGER_INDEXES,
    LEDGER_SEALED,
    encrypt_values,
    is_encrypted,
    key_id_of,
    ledger_index,
    open_ledger,
    rotate_ledger,
)
from dicom_deid.vault.envelope import VaultError
from dicom_deid.vault.keys import load_vault_key, vault_key_id
from dicom_deid.warehouse.base import Warehouse
from dicom_deid.warehouse.factory import open_warehouse
from emulators import Cloud
from instances import KEY

__all__ = ["landed"]  # the fixture this module uses, imported from test_deid_steps
PROJECT = "sealedledger"
OTHER_VAULT_KEY = bytes(range(50, 82))
REASON = "consent withdrawn by the participant"


def _released_files(tree: Path) -> dict[str, dict[str, str]]:
    """Tree path -> the real pseudonymous values of the released file (what the ledger
    must hold, and never in clear)."""
    out = {}
    for path in sorted(tree.rglob("*.dcm")):
        data = path.read_bytes()
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out[path.relative_to(tree).as_posix()] = {
            "study_uid": str(ds.StudyInstanceUID), "series_uid": str(ds.SeriesInstanceUID),
            "sop_uid": str(ds.SOPInstanceUID), "patient_id": str(ds.PatientID),
            "output_path": path.relative_to(tree).as_posix(),
            "output_sha256": hashlib.sha256(data).hexdigest()}
    return out


def _ledger(settings: Any) -> list[dict[str, Any]]:
    return _query(settings, f"SELECT * FROM deid_ledger WHERE project = '{PROJECT}' "
                            "ORDER BY source_uri, batch_id")


@pytest.fixture(scope="module")
def night1(landed: dict[str, Any]) -> dict[str, Any]:
    """Night 1 of the project, with the vault key (as the DAG always runs it)."""
    settings = _settings(landed, PROJECT)
    req = _req(landed, landed["other_modality"], project=PROJECT)  # no failing input
    _run_steps(RunWorkspace(settings.work_dir, "batch-sl1"), settings, req,
               vault_key=VAULT_KEY)
    tree = Path(settings.destination)
    return {"settings": settings, "req": req, "tree": tree,
            "files": _released_files(tree)}


def test_the_ledger_holds_the_released_files_values_only_encrypted(
        night1: dict[str, Any], landed: dict[str, Any]) -> None:
    files, rows = night1["files"], _ledger(night1["settings"])
    assert files and len(rows) == len(files)
    text = json.dumps(rows, default=str)
    for values in files.values():  # no UID, patient ID, path or hash in clear anywhere
        assert not [v for v in values.values() if v in text]
    assert not [v for v in _originals(landed) if v in text]
    for row in rows:
        assert all(is_encrypted(row[c]) and key_id_of(row[c]) == vault_key_id(VAULT_KEY)
                   for c in LEDGER_SEALED)
        assert all(str(row[i]).startswith(f"i1.{vault_key_id(VAULT_KEY)}.")
                   for i in LEDGER_INDEXES.values())
        assert row["source_uri"] and row["source_sha256"]  # the planner's side: in clear
    # The right key opens exactly the released files' values.
    opened = open_ledger(rows, VAULT_KEY)
    assert {r["output_path"]: {c: r[c] for c in LEDGER_SEALED} for r in opened} == files
    assert all(r[i] == ledger_index(VAULT_KEY, PROJECT, c, r[c])
               for r in opened for c, i in LEDGER_INDEXES.items())
    # Another key opens none; no key is refused; a value moved between rows or columns
    # does not open.
    with pytest.raises(VaultError, match="another vault key"):
        open_ledger(rows, OTHER_VAULT_KEY)
    with pytest.raises(VaultError, match="none was given"):
        open_ledger(rows, None)
    a, b = rows[0], rows[1]
    with pytest.raises(VaultError, match="moved from another column or row"):
        open_ledger([{**a, "sop_uid": b["sop_uid"]}], VAULT_KEY)
    with pytest.raises(VaultError, match="moved from another column or row"):
        open_ledger([{**a, "study_uid": a["series_uid"]}], VAULT_KEY)


def test_a_second_night_supersedes_through_the_encrypted_ledger(
        night1: dict[str, Any]) -> None:
    """A changed landing file replaces its release (found by landing path); the same
    instance re-sent under another landing path replaces its release too (found by the
    tree path's blind index: the values are not in clear to compare)."""
    settings, req, tree, files = (night1[k] for k in ("settings", "req", "tree", "files"))
    rows = open_ledger(_ledger(settings), VAULT_KEY)
    changed, copied = sorted(r["source_uri"] for r in rows)[:2]
    copied_path = next(r["output_path"] for r in rows if r["source_uri"] == copied)
    day = DAY1 + timedelta(days=2)
    again = str(Path(copied).with_name("resent-" + Path(copied).name))
    shutil.copyfile(copied, again)
    moment = (day + timedelta(hours=2)).timestamp()
    os.utime(again, (moment, moment))
    resend_corrected(settings, changed, day)  # exports and loads the day (the copy too)
    ws = RunWorkspace(settings.work_dir, "batch-sl2")
    plans = _run_steps(ws, settings, req, vault_key=VAULT_KEY)
    assert sum(p["files"] for p in plans) == 2
    after = open_ledger(_ledger(settings), VAULT_KEY)
    status = {(r["source_uri"], r["batch_id"]): r["status"] for r in after}
    assert status[(changed, "batch-sl1")] == status[(copied, "batch-sl1")] == "superseded"
    assert status[(changed, "batch-sl2")] == status[(again, "batch-sl2")] == "released"
    released = {r["output_path"]: r for r in after if r["status"] == "released"}
    assert sorted(released) == sorted(files)  # one current version of each instance
    assert released[copied_path]["source_uri"] == again
    manifest = json.loads((tree / "manifests" / "batch-sl2.json").read_text())
    assert copied_path in manifest["replaced"] and not manifest["removed"]
    now = _released_files(tree)
    assert {p: {c: r[c] for c in LEDGER_SEALED} for p, r in released.items()} == now
    text = json.dumps(_ledger(settings), default=str)
    assert not [v for values in now.values() for v in values.values() if v in text]


def test_a_withdrawal_finds_its_rows_by_blind_index(night1: dict[str, Any]) -> None:
    settings, tree = night1["settings"], night1["tree"]
    study = sorted(_released_files(tree).values(), key=lambda v: v["study_uid"])[0]["study_uid"]
    with pytest.raises(WithdrawalError, match="needs the vault key"):
        withdraw(settings, PROJECT, "study", study, REASON, "alice")
    with pytest.raises(WithdrawalError, match="does not open with this vault key"):
        withdraw(settings, PROJECT, "study", study, REASON, "alice", OTHER_VAULT_KEY)
    gone = sorted(p for p, v in _released_files(tree).items() if v["study_uid"] == study)
    done = withdraw(settings, PROJECT, "study", study, REASON, "alice", VAULT_KEY)
    assert (done["status"], done["files_removed"]) == ("withdrawn", len(gone))
    assert not (tree / study).exists()
    rows = _ledger(settings)
    assert all(is_encrypted(r[c]) for r in rows for c in LEDGER_SEALED)
    withdrawn = [r for r in open_ledger(rows, VAULT_KEY) if r["status"] == "withdrawn"]
    assert sorted(r["output_path"] for r in withdrawn) == gone
    assert {r["study_uid"] for r in withdrawn} == {study}
    assert study not in json.dumps(rows, default=str)
    again = withdraw(settings, PROJECT, "study", study, REASON, "alice", VAULT_KEY)
    assert again["status"] == "unchanged"


def test_rotating_the_vault_key_re_encrypts_the_ledger(
        night1: dict[str, Any], tmp_path: Path) -> None:
    settings = night1["settings"]
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    old.write_text(VAULT_KEY.hex())
    assert main(["keygen", "--vault", str(new)]) == 0
    new_key = load_vault_key(new)
    before = _ledger(settings)
    assert main(["vault", "rotate", "--warehouse", settings.warehouse, "--old-key-file",
                 str(old), "--new-key-file", str(new)]) == 0
    after = _ledger(settings)
    assert [(r["source_uri"], r["batch_id"], r["status"]) for r in after] == [
        (r["source_uri"], r["batch_id"], r["status"]) for r in before]
    for row in after:
        assert all(key_id_of(row[c]) == vault_key_id(new_key) for c in LEDGER_SEALED)
    assert open_ledger(after, new_key) != after
    strip = set(LEDGER_INDEXES.values())
    assert [{k: v for k, v in r.items() if k not in strip} for r in open_ledger(
        after, new_key)] == [{k: v for k, v in r.items() if k not in strip}
                             for r in open_ledger(before, VAULT_KEY)]
    with pytest.raises(VaultError):
        open_ledger(after, VAULT_KEY)
    # Re-indexed too: the new key finds the rows, the old one none.
    opened = open_ledger(after, new_key)
    sop, status = next((r["sop_uid"], r["status"]) for r in opened if r["sop_uid"])
    n = sum((r["sop_uid"], r["status"]) == (sop, status) for r in opened)
    with open_warehouse(settings.warehouse) as wh:
        assert [r.sop_uid for r in ledger.rows_where(wh, PROJECT, "sop_uid", [sop], new_key,
                                                     status=status)] == [sop] * n
        assert ledger.rows_where(wh, PROJECT, "sop_uid", [sop], VAULT_KEY, status=status) == []


# -- the warehouse level, on both backends ----------------------------------------------

WHEN = datetime(2026, 5, 1, 9, tzinfo=UTC)


@pytest.fixture(params=["duckdb", "bigquery"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """An empty warehouse with its schema: the embedded DuckDB, or BigQuery (emulator)."""
    if request.param == "duckdb":
        url = f"duckdb://{tmp_path}/wh.duckdb"
    else:
        cloud: Cloud = request.getfixturevalue("gcloud_env")
        url = f"bigquery://{cloud.project}/sl{os.urandom(6).hex()}"
    with open_warehouse(url) as wh:
        wh.ensure_schema()
        yield wh


def _row(uri: str, batch: str, n: int, project: str = "p") -> ledger.LedgerRow:
    return ledger.LedgerRow(
        project=project, source_uri=uri, source_sha256=f"h{n}", study_uid=f"2.25.{n // 2}",
        series_uid=f"2.25.{n // 2}.1", sop_uid=f"2.25.{n // 2}.1.{n}", patient_id=f"PID{n % 2}",
        output_path=f"2.25.{n // 2}/2.25.{n // 2}.1/2.25.{n // 2}.1.{n}.dcm",
        output_sha256=f"{n:064x}", config_sha256="c", key_id="k", batch_id=batch,
        released_at=WHEN)


def test_a_ledger_in_clear_still_reads_and_rotation_encrypts_it(
        warehouse: Warehouse, tmp_path: Path) -> None:
    """Rows written in clear (an older ledger) beside rows under the vault key: lookups
    with the key find both, reads open both, and ``rotate_ledger`` encrypts the clear rows
    of the old key's projects (found by their ledger or their mapping) and re-keys the
    others, leaving projects of other keys alone."""
    legacy = [_row(f"/l/{i}", "b0", i) for i in range(3)]
    sealed = [_row(f"/l/{i}", "b1", i) for i in range(3, 6)]
    mapped = [_row(f"/m/{i}", "bm", i, project="m") for i in range(2)]  # mapping only
    stranger = [_row(f"/s/{i}", "bs", i, project="s") for i in range(2)]  # no key at all
    ledger.write_rows(warehouse, legacy + mapped + stranger)  # no vault key: in clear
    ledger.write_rows(warehouse, sealed, VAULT_KEY)
    table = warehouse.query("SELECT * FROM deid_ledger ORDER BY project, batch_id, source_uri")
    stored = {(r["batch_id"], r["source_uri"]): r for r in table.to_pylist()}
    assert stored[("b0", "/l/0")]["sop_uid"] == legacy[0].sop_uid  # as written
    assert stored[("b0", "/l/0")]["sop_uid_index"] is None
    assert is_encrypted(stored[("b1", "/l/3")]["sop_uid"])
    text = json.dumps([stored[("b1", r.source_uri)] for r in sealed], default=str)
    assert not [r.sop_uid for r in sealed if str(r.sop_uid) in text]
    # Lookups with the key: the encrypted rows by index, the clear ones by value.
    study = str(legacy[2].study_uid)  # rows 2 (clear) and 3 (encrypted) share it
    found = ledger.rows_where(warehouse, "p", "study_uid", [study], VAULT_KEY)
    assert [(r.batch_id, r.source_uri) for r in found] == [("b0", "/l/2"), ("b1", "/l/3")]
    assert all(r.study_uid == study for r in found)
    assert [r.source_uri for r in ledger.rows_where(warehouse, "p", "study_uid", [study])
            ] == ["/l/2"]  # without the key only the clear one matches
    current = ledger.current_rows(warehouse, "p", output_paths=[
        legacy[1].output_path, sealed[1].output_path], vault_key=VAULT_KEY)
    assert [r.as_dict() for r in current] == [legacy[1].as_dict(), sealed[1].as_dict()]
    assert ledger.current_rows(warehouse, "p", source_uris=["/l/4"], vault_key=VAULT_KEY
                               )[0].as_dict() == sealed[1].as_dict()
    assert sorted(ledger.released_paths(warehouse, "p", VAULT_KEY)) == sorted(
        r.output_path for r in legacy + sealed)
    with pytest.raises(VaultError, match="none was given"):
        ledger.released_paths(warehouse, "p")
    assert ledger.sealed_state(warehouse, "p", VAULT_KEY) == (3, 3)
    assert ledger.sealed_state(warehouse, "p", OTHER_VAULT_KEY) == (3, 0)
    # Project m's ledger is all in clear, but its batch's mapping is under the key.
    warehouse.insert_rows("deid_mapping", [{"run_id": "bm", "sop_uid": "2.25.x",
                                            "original_sop_uid": encrypt_values(
                                                ["1.2.3"], VAULT_KEY, "original_sop_uid",
                                                ["bm|2.25.x"])[0]}])
    assert rotate_ledger(warehouse, OTHER_VAULT_KEY, KEY, tmp_path) == 0  # none of its
    assert rotate_ledger(warehouse, VAULT_KEY, OTHER_VAULT_KEY, tmp_path / "scratch") == 8
    rows = warehouse.query("SELECT * FROM deid_ledger").to_pylist()
    assert len(rows) == 10
    by_project: dict[str, set[str | None]] = {}
    for row in rows:
        by_project.setdefault(row["project"], set()).update(
            key_id_of(row[c]) for c in LEDGER_SEALED)
    assert by_project == {"p": {vault_key_id(OTHER_VAULT_KEY)},
                          "m": {vault_key_id(OTHER_VAULT_KEY)}, "s": {None}}
    opened = {(r["batch_id"], r["source_uri"]): r for r in open_ledger(rows, OTHER_VAULT_KEY)}
    for r in legacy + sealed + mapped + stranger:
        assert {k: opened[(r.batch_id, r.source_uri)][k] for k in r.as_dict()} == r.as_dict()
    found = ledger.rows_where(warehouse, "p", "study_uid", [study], OTHER_VAULT_KEY)
    assert [(r.batch_id, r.source_uri) for r in found] == [("b0", "/l/2"), ("b1", "/l/3")]
    assert ledger.rows_where(warehouse, "p", "study_uid", [study], VAULT_KEY) == []
