"""Withdrawal, without Airflow: a study or a patient taken out of a project's research
tree, ``deid_metadata`` and the ledger, recorded in ``deid_withdrawals``; asked again, it
changes nothing; a later file of a withdrawn patient is held back; unknown values and
reasons that may hold PHI are refused without repeating an original value; releases of
one tree are built one at a time.

The landing zone and the run helpers are ``test_deid_steps``'s (module-scoped: this module
gets its own landing zone and warehouse).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from test_deid_steps import (
    DAY1,
    _query,
    _req,
    _run_steps,
    _settings,
    landed,
    resend_corrected,
)

from dicom_deid.pipeline import deid_steps
from dicom_deid.pipeline.deid_steps import RunWorkspace
from dicom_deid.pipeline.run_record import key_id
from dicom_deid.pipeline.settings import PipelineSettings
from dicom_deid.pipeline.withdraw import REASON_MAX, WithdrawalError, check_reason, withdraw
from dicom_deid.storage import LocalStore
from instances import KEY

__all__ = ["landed"]  # the fixture this module uses, imported from test_deid_steps
REASON = "consent withdrawn by the participant"
#: The cohort of these tests: in ``landed`` its MR series are two patients' two studies,
#: and none of its inputs is the truncated one.
MODALITY = "MR"


def _files(tree: Path) -> dict[str, bytes]:
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in sorted(tree.rglob("*.dcm"))}


def _ledger(settings: PipelineSettings, project: str) -> list[dict[str, Any]]:
    return _query(settings, "SELECT * FROM deid_ledger WHERE project = "
                            f"'{project}' ORDER BY source_uri, batch_id")


def _withdrawals(settings: PipelineSettings, project: str) -> list[dict[str, Any]]:
    return _query(settings, f"SELECT * FROM deid_withdrawals WHERE project = '{project}' "
                            "ORDER BY level, original_value")


def _metadata_uris(settings: PipelineSettings, tree: Path) -> list[str]:
    return [r["u"] for r in _query(settings, "SELECT source_uri AS u FROM deid_metadata "
                                             f"WHERE source_uri LIKE '{tree}/%' ORDER BY 1")]


def _originals(settings: PipelineSettings, column: str, paths: list[str]) -> set[str]:
    quoted = ", ".join(f"'{p}'" for p in paths)
    return {r["v"] for r in _query(settings, f"SELECT {column} AS v FROM deid_mapping "
                                             f"WHERE output_path IN ({quoted})")}


def _state(settings: PipelineSettings, project: str) -> tuple[Any, ...]:
    """Everything a withdrawal may change, to show that a refused one changed nothing."""
    tree = Path(settings.destination)
    return (os.readlink(tree), _files(tree), _ledger(settings, project),
            _withdrawals(settings, project), _metadata_uris(settings, tree))


@pytest.fixture(scope="module")
def released(landed: dict[str, Any]) -> dict[str, Any]:
    """Project ``wd``: one night released its cohort (two patients, several studies)."""
    settings = _settings(landed, "wd")
    req = _req(landed, MODALITY, project="wd")
    _run_steps(RunWorkspace(settings.work_dir, "batch-wd1"), settings, req)
    return {"settings": settings, "tree": Path(settings.destination)}


def _released_studies(settings: PipelineSettings, project: str) -> list[str]:
    return sorted({r["study_uid"] for r in _ledger(settings, project)
                   if r["status"] == "released"})


def test_withdrawing_a_study_takes_it_out_of_the_tree_tables_and_ledger(
    released: dict[str, Any]
) -> None:
    settings, tree = released["settings"], released["tree"]
    before = _files(tree)
    studies = _released_studies(settings, "wd")
    assert len(studies) >= 2
    study = studies[0]
    gone = sorted(p for p in before if p.startswith(f"{study}/"))
    assert gone and len(gone) < len(before)
    metadata_before = _metadata_uris(settings, tree)
    result = withdraw(settings, "wd", "study", study, f"  {REASON}\n", "alice")
    assert (result["status"], result["files_removed"], result["ledger_rows_withdrawn"],
            result["metadata_rows_deleted"], result["originals_blocked"]) == (
        "withdrawn", len(gone), len(gone), len(gone), 1)
    wid = result["withdrawal_id"]
    assert wid.startswith("withdrawal-") and wid.endswith("Z-wd") and result["release"] == wid
    # The tree: a new release without the study, every other file as it was.
    assert Path(os.readlink(tree)).name == wid
    after = _files(tree)
    assert sorted(after) == sorted(set(before) - set(gone))
    assert all(after[p] == before[p] for p in after)
    assert not (tree / study).exists()
    manifest = json.loads((tree / "manifests" / f"{wid}.json").read_text())
    assert (manifest["withdrawn"], manifest["removed"], manifest["added"],
            manifest["replaced"]) == (gone, gone, [], [])
    assert manifest["withdrawal"] == {"level": "study", "value": study}
    assert "alice" not in json.dumps(manifest) and REASON not in json.dumps(manifest)
    # deid_metadata describes the tree again.
    assert _metadata_uris(settings, tree) == sorted(
        set(metadata_before) - {f"{tree}/{p}" for p in gone})
    assert _metadata_uris(settings, tree) == sorted(f"{tree}/{p}" for p in after)
    # The ledger: the study's rows withdrawn, by whom and why; the others released.
    rows = _ledger(settings, "wd")
    mine = [r for r in rows if r["study_uid"] == study]
    assert sorted(r["output_path"] for r in mine) == gone
    assert {(r["status"], r["status_by"], r["status_reason"]) for r in mine} == {
        ("withdrawn", "alice", REASON)}
    assert all(r["status_at"] is not None for r in mine)
    assert {r["status"] for r in rows if r["study_uid"] != study} == {"released"}
    # deid_withdrawals: the ORIGINAL study UID (so it holds across a key change).
    (row,) = _withdrawals(settings, "wd")
    original = _originals(settings, "original_study_uid", gone)
    assert len(original) == 1 and study not in original
    assert (row["level"], row["original_value"], row["pseudonymous_value"]) == (
        "study", next(iter(original)), study)
    assert (row["requested_by"], row["reason"], row["batch_id"], row["files_removed"],
            row["key_id"]) == ("alice", REASON, wid, len(gone), key_id(KEY))
    assert row["requested_at"] is not None
    # Asked again: nothing changes, and the answer says so.
    state = _state(settings, "wd")
    again = withdraw(settings, "wd", "study", study, "asked twice", "bob")
    assert (again["status"], again["files_removed"], again["withdrawal_id"]) == (
        "unchanged", 0, wid)
    assert _state(settings, "wd") == state


def test_unknown_and_original_values_are_refused_naming_no_original(
    released: dict[str, Any]
) -> None:
    settings = released["settings"]
    state = _state(settings, "wd")
    with pytest.raises(WithdrawalError, match=r"no released series with the identifier") as unknown:
        withdraw(settings, "wd", "series", "2.25.1234", REASON, "alice")
    assert "project wd" in str(unknown.value) and "2.25.1234" not in str(unknown.value)
    # An ORIGINAL identifier gets the answer an unknown value gets (whether it is a real
    # one is not told), and is never repeated back.
    original = _query(settings, "SELECT StudyInstanceUID AS u, PatientID AS p "
                                "FROM dicom_metadata LIMIT 1")[0]
    for level, value in (("study", original["u"]), ("patient", original["p"])):
        with pytest.raises(WithdrawalError, match=f"no released {level} with the") as given:
            withdraw(settings, "wd", level, value, REASON, "alice")
        assert value not in str(given.value) and "ORIGINAL" not in str(given.value)
    with pytest.raises(WithdrawalError, match="level must be one of"):
        withdraw(settings, "wd", "frame", "2.25.1", REASON, "alice")
    with pytest.raises(WithdrawalError, match="who asked"):
        withdraw(settings, "wd", "study", "2.25.1", REASON, " ")
    assert _state(settings, "wd") == state


@pytest.mark.parametrize("reason", [
    "Doe^Jane asked us to remove her images",  # a DICOM person name
    "requested by Smith, John",  # a name as forms write it
    "withdrawn per Dr. Wong",  # a title and a name
    "Patient: Jane Doe, consent revoked",  # a label and a name
    "consent revoked on 2026-03-05",  # a date
    "consent revoked on 5 March 2024",  # a date, written
    "wrong patient, MRN 12345678",  # an ID-like number
    "duplicate of 1.2.840.113619.2.55.3.604688119",  # a UID
    "call back on 555-0134",  # a phone number
    "patient is 93 years old",  # an age
    "moved to 12 Main Street",  # an address
    "the images show Augustin Treloar",  # a name in running text
    "banner reads WONG at the top",  # a name in capitals
])
def test_a_reason_that_may_hold_phi_is_refused_without_repeating_it(reason: str) -> None:
    with pytest.raises(WithdrawalError, match="must be PHI-free") as refused:
        check_reason(reason)
    assert reason not in str(refused.value)


def test_plain_reasons_are_accepted_and_long_or_empty_ones_refused() -> None:
    for reason in ("consent withdrawn", "Wrong patient: the images belong to another study",
                   "OCR missed text on US images. Sent again from PACS",
                   "Ethics committee decision, case 17", "duplicate upload from the PACS "
                   "migration", "data protection officer's request at the clinic"):
        assert check_reason(reason) == reason
    assert check_reason("  consent\n withdrawn ") == "consent withdrawn"
    with pytest.raises(WithdrawalError, match=f"at most {REASON_MAX}"):
        check_reason("x" * (REASON_MAX + 1))
    with pytest.raises(WithdrawalError, match="reason is required"):
        check_reason(" \n")
    with pytest.raises(WithdrawalError, match="control characters"):
        check_reason("consent\x00withdrawn")


def test_a_reason_naming_the_withdrawn_patient_is_refused(released: dict[str, Any]) -> None:
    """The generic detectors miss a name written plainly in lower case ("jane doe": a
    capitalised one is refused as a name); the withdrawn instances' own values (from
    dicom_metadata) catch it, in another order and case."""
    settings, tree = released["settings"], released["tree"]
    study = _released_studies(settings, "wd")[-1]
    path = next(r["source_uri"] for r in _ledger(settings, "wd") if r["study_uid"] == study)
    name = pydicom.dcmread(path, stop_before_pixels=True).PatientName
    plain = f"consent revoked by {name.given_name} {name.family_name}".lower()
    check_reason(plain)  # no generic detector finds it...
    state = _state(settings, "wd")
    with pytest.raises(WithdrawalError, match="a value of the withdrawn instances") as refused:
        withdraw(settings, "wd", "study", study, plain, "alice")  # ...the context does
    assert str(name.family_name).upper() not in str(refused.value).upper()
    assert _state(settings, "wd") == state
    assert (tree / study).exists()


def test_a_withdrawn_patients_later_file_is_de_identified_and_held_back(
    landed: dict[str, Any]
) -> None:
    settings, name = _settings(landed, "wd_patient"), "wd_patient"
    tree = Path(settings.destination)
    req = _req(landed, MODALITY, project=name)
    _run_steps(RunWorkspace(settings.work_dir, "batch-wp1"), settings, req)
    rows = _ledger(settings, name)
    patients = sorted({r["patient_id"] for r in rows})
    assert len(patients) == 2
    patient = patients[0]
    result = withdraw(settings, name, "patient", patient, "consent revoked", "carol")
    mine = [r for r in rows if r["patient_id"] == patient]
    assert result["files_removed"] == len(mine) > 0
    (block,) = _withdrawals(settings, name)
    assert block["level"] == "patient" and block["original_value"] != patient
    assert {block["original_value"]} == _originals(
        settings, "original_patient_id", [r["output_path"] for r in mine])
    withdrawn = _files(tree)
    assert not {r["output_path"] for r in mine} & set(withdrawn)
    # The patient's file is re-sent with corrected content (a new hash) and exported.
    changed = mine[0]["source_uri"]
    resend_corrected(settings, changed, DAY1 + timedelta(days=2))
    # The next night de-identifies it (new content), then holds it back.
    ws2 = RunWorkspace(settings.work_dir, "batch-wp2")
    plans = _run_steps(ws2, settings, req)
    assert sum(p["files"] for p in plans) == 1
    plan = ws2.read_json(ws2.release_plan)["release"]
    assert plan["add"] == {} and plan["withdrawn"] == [mine[0]["output_path"]]
    assert _files(tree) == withdrawn and Path(os.readlink(tree)).name == result["release"]
    again = [r for r in _ledger(settings, name) if r["source_uri"] == changed]
    assert [(r["batch_id"], r["status"], r["status_reason"]) for r in again] == [
        ("batch-wp1", "withdrawn", "consent revoked"),
        ("batch-wp2", "withdrawn", "patient withdrawn earlier")]
    assert f"{tree}/{mine[0]['output_path']}" not in _metadata_uris(settings, tree)
    # And withdrawing the patient again changes nothing.
    assert withdraw(settings, name, "patient", patient, "consent revoked", "carol")[
        "status"] == "unchanged"


def test_releases_of_one_tree_are_built_one_at_a_time(tmp_path: Path) -> None:
    """While another holds the tree's lock (a night publishing, a withdrawal), a publish
    waits; it goes on once the lock is released."""
    store = LocalStore(tmp_path)
    (tmp_path / "staged").mkdir()
    (tmp_path / "staged" / "a.dcm").write_bytes(b"a")
    (tmp_path / "staged" / "b.dcm").write_bytes(b"b")
    store.publish_release("t", "r1", {"a.dcm": "staged/a.dcm"}, [], {})
    done: list[str] = []
    with open(tmp_path / ".releases-t.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: done.append(store.publish_release(
            "t", "r2", {"b.dcm": "staged/b.dcm"}, ["a.dcm"], {}).release))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and store.release_of("t") == "r1"  # waiting for the lock
        fcntl.flock(lock, fcntl.LOCK_UN)
    worker.join(30)
    assert done == ["r2"] and store.release_of("t") == "r2"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["b.dcm"]


def test_a_withdrawal_needs_the_files_mapping(landed: dict[str, Any]) -> None:
    """A released file without its deid_mapping row (its batch's load_mapping did not
    finish) cannot be blocked by its original identifiers: refused, nothing changed."""
    settings = _settings(landed, "wd_nomap")
    req = _req(landed, MODALITY, project="wd_nomap")
    ws = RunWorkspace(settings.work_dir, "batch-nomap")
    _run_steps(ws, settings, req, until_verified=True)
    deid_steps.publish(ws, settings, req, DAY1)  # published; the mapping never loaded
    study = _released_studies(settings, "wd_nomap")[0]
    state = _state(settings, "wd_nomap")
    with pytest.raises(WithdrawalError, match="no row in deid_mapping"):
        withdraw(settings, "wd_nomap", "study", study, REASON, "alice")
    assert _state(settings, "wd_nomap") == state
    deid_steps.load_mapping(ws, settings)
    assert withdraw(settings, "wd_nomap", "study", study, REASON, "alice")[
        "status"] == "withdrawn"
