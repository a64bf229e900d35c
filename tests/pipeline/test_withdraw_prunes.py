"""A withdrawal leaves nothing of the withdrawn files in the destination (the release shown
until then, kept for its readers, loses them too); a value that is not one of the
project's pseudonyms is refused by its form, without a lookup, and an original identifier
gets the answer any unknown value gets (no membership oracle); a reason holding a date
written in words is refused.

The landing zone and the run helpers are ``test_deid_steps``'s (module-scoped: this module
gets its own landing zone and warehouse).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_deid_steps import _query, _req, _run_steps, _settings, landed

from dicom_deid.config.model import DeidConfig, ProfileType, privacy_first
from dicom_deid.deid.pseudonyms import Pseudonymizer
from dicom_deid.pipeline import withdraw as withdraw_module
from dicom_deid.pipeline.deid_steps import RunWorkspace
from dicom_deid.pipeline.withdraw import WithdrawalError, check_reason, withdraw
from instances import every_file

__all__ = ["landed"]  # the fixture this module uses, imported from test_deid_steps
REASON = "consent withdrawn by the participant"
MODALITY = "MR"


def _released(settings: Any, project: str) -> list[dict[str, Any]]:
    return _query(settings, "SELECT * FROM deid_ledger WHERE project = "
                            f"'{project}' AND status = 'released' ORDER BY output_path")


@pytest.fixture(scope="module")
def released(landed: dict[str, Any]) -> dict[str, Any]:
    """Project ``wdp``: one night released its cohort (two patients)."""
    settings = _settings(landed, "wdp")
    req = _req(landed, MODALITY, project="wdp")
    _run_steps(RunWorkspace(settings.work_dir, "batch-wdp1"), settings, req)
    return {"settings": settings, "tree": Path(settings.destination)}


def test_a_withdrawn_patients_files_are_gone_from_every_release_folder(
        released: dict[str, Any]) -> None:
    settings, tree = released["settings"], released["tree"]
    rows = _released(settings, "wdp")
    patients = sorted({r["patient_id"] for r in rows})
    assert len(patients) == 2
    patient = patients[0]
    gone = sorted(r["output_path"] for r in rows if r["patient_id"] == patient)
    stays = sorted(r["output_path"] for r in rows if r["patient_id"] != patient)
    assert gone and stays
    contents = {(tree / p).read_bytes() for p in gone}
    before = Path(os.readlink(tree)).name  # the release a reader may have resolved
    old = tree.parent / f".releases-{tree.name}" / before
    assert all((old / p).exists() for p in gone)
    result = withdraw(settings, "wdp", "patient", patient, REASON, "alice")
    assert result["status"] == "withdrawn" and result["files_removed"] == len(gone)
    assert Path(os.readlink(tree)).name == result["release"] != before
    # Nothing in the destination holds a withdrawn file, by path or by content.
    files = every_file(tree.parent)
    assert not [p for p, data in files.items() if data in contents]
    assert not [p for p in files if any(p.endswith(g) for g in gone)]
    # The previous release keeps the rest for its readers; the tree shows the rest.
    assert old.is_dir() and all((old / p).is_file() for p in stays)
    assert all((tree / p).is_file() for p in stays)
    assert not any((tree / p).exists() for p in gone)


def _refusal(settings: Any, level: str, value: str, **kw: Any) -> str:
    with pytest.raises(WithdrawalError) as refused:
        withdraw(settings, "wdp", level, value, REASON, "alice", **kw)
    assert value not in str(refused.value)
    return str(refused.value)


def test_an_original_identifier_gets_the_answer_any_unknown_value_gets(
        released: dict[str, Any]) -> None:
    """Without the policy (engine use), the lookup runs and finds nothing; the answer is
    the same for an original ID, a UID of the right form that was never released and a
    typo: it does not tell whether the value is a real patient's."""
    settings = released["settings"]
    original = _query(settings, "SELECT StudyInstanceUID AS u, PatientID AS p "
                                "FROM dicom_metadata WHERE PatientID IS NOT NULL LIMIT 1")[0]
    unknown_uid = Pseudonymizer(bytes(32 * [7])).uid("1.2.3.4.5")
    for level, real, unknown in (("patient", original["p"], "NOSUCHPATIENT123"),
                                 ("study", original["u"], unknown_uid)):
        answers = {_refusal(settings, level, v) for v in (real, unknown, "x-typo")}
        assert len(answers) == 1, answers
        (answer,) = answers
        assert "has no released" in answer and "ORIGINAL" not in answer.upper()


def test_a_value_not_of_the_projects_pseudonym_form_is_refused_without_a_lookup(
        released: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = released["settings"]
    pseudonym_form = withdraw_module.pseudonym_form
    rows = _released(settings, "wdp")
    original = _query(settings, "SELECT PatientID AS p FROM dicom_metadata "
                                "WHERE PatientID IS NOT NULL LIMIT 1")[0]["p"]
    policy = privacy_first()
    assert pseudonym_form(policy, "patient", rows[0]["patient_id"])
    assert pseudonym_form(policy, "study", rows[0]["study_uid"])
    assert pseudonym_form(policy, "instance", rows[0]["sop_uid"])
    assert not pseudonym_form(policy, "patient", original)
    assert not pseudonym_form(policy, "study", "1.2.840.113619.2.55.3.604688119")
    assert not pseudonym_form(policy, "instance", "2.25.1234")  # not a UUID's
    assert not pseudonym_form(privacy_first(id_prefix="XY"), "patient", rows[0]["patient_id"])
    # A policy that keeps the identifier gives it no form: any value is looked up.
    assert pseudonym_form(DeidConfig(profile=ProfileType.KEEP_ALL), "patient", original)
    asked = (("patient", original), ("study", "1.2.840.113619.2.55.3.6046"),
             ("series", "2.25.1234"))
    looked_up = [_refusal(settings, level, "NOSUCHVALUE12345") for level, _ in asked]

    def no_lookup(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the warehouse was opened")

    monkeypatch.setattr(withdraw_module, "open_private_warehouse", no_lookup)
    by_form = [_refusal(settings, level, value, policy=policy) for level, value in asked]
    assert by_form == looked_up  # the same answer, without a lookup


@pytest.mark.parametrize("reason", [
    "patient born march fourteenth nineteen fifty eight",
    "born March 1958, consent revoked",
    "seen on the fourteenth of march",
    "wrong study from march the 14th",
    "birthday is may twenty-first",
    "dob dec '58",
])
def test_a_reason_with_a_date_written_in_words_is_refused(reason: str) -> None:
    with pytest.raises(WithdrawalError, match="looks like a date") as refused:
        check_reason(reason)
    assert reason not in str(refused.value)


@pytest.mark.parametrize("reason", [
    "consent withdrawn", "the participant may withdraw at any time",
    "data may be deleted in 2025 per the protocol", "second opinion requested in march",
    "decision of the board", "OCR missed text on US images. Sent again from PACS",
])
def test_plain_reasons_naming_a_month_or_may_are_accepted(reason: str) -> None:
    assert check_reason(reason) == reason
