"""The gate searches an ID in the forms the residual sweep finds it in (without its letter
prefix and leading zeros, one list of them: ``id_digit_forms``), and as a whole component
of a UID the output keeps (RetainUIDs) -- an external probe released both with the sweep
off and the gate passing them."""

from __future__ import annotations

import io

import pydicom
import pytest

from dicom_deid.config.google import load_config
from dicom_deid.config.model import DeidConfig, Option
from dicom_deid.deid.gate import Gate, Verdict
from instances import ROOT, deidentify_bytes, make_instance, to_bytes

UID_TAGS = (0x0020000D, 0x0020000E, 0x00080018)


def _verdict(source: bytes, output: bytes, gate: Gate | None = None) -> Verdict:
    gate = gate or Gate()
    ds = pydicom.dcmread(io.BytesIO(output))
    uids = {t: str(ds[t].value) for t in UID_TAGS if t in ds}
    return gate.check("out.dcm", output, gate.source_facts(source, len(source)), uids)


def _keeping(*keywords: str, sweep: bool = False) -> DeidConfig:
    return load_config({"dicomTagConfig": {"actions": [
        {"queries": list(keywords), "keepTag": {}}]}, "dicomDeid": {"residualSweep": sweep}})


def _kernel(patient_id: str, kernel: str, **more: str) -> bytes:
    source = make_instance()
    source.PatientID, source.ConvolutionKernel = patient_id, kernel  # not in Table E.1-1
    for keyword, value in more.items():
        setattr(source, keyword, value)
    return to_bytes(source)


def test_the_shared_forms_of_an_id() -> None:
    from dicom_deid.text.context import id_digit_forms

    assert id_digit_forms("MRN4821397") == ("4821397",)
    assert id_digit_forms("MRN-0004821397") == ("0004821397", "4821397")
    assert id_digit_forms("004821397\\A12345678") == ("4821397", "12345678")
    assert id_digit_forms("4821397") == ()  # the value itself is searched already
    assert id_digit_forms("ST55501") == ()  # 5 digits: found alone by chance
    assert id_digit_forms("X-RAY") == ()


@pytest.mark.parametrize(("patient_id", "written"), [
    ("MRN4821397", "4821397"), ("MRN-0004821397", "0004821397"),
    ("MRN-0004821397", "4821397"), ("MRN4821397", "B45f 4821397")])
def test_an_id_without_its_prefix_in_kept_text_is_a_leak(patient_id: str, written: str
                                                        ) -> None:
    data = _kernel(patient_id, written)
    _, _, output = deidentify_bytes(data, DeidConfig(residual_sweep=False))
    assert written.encode() in output
    assert _verdict(data, output).problems == ("original PatientID value found",)
    # the sweep (on by default) finds the same forms: nothing is left to find
    out, _, output = deidentify_bytes(data, DeidConfig())
    assert "[CTX]" in out.ConvolutionKernel
    assert _verdict(data, output).ok


def test_other_ids_are_searched_without_their_prefix_too() -> None:
    data = _kernel("P1", "77123456", AccessionNumber="ACC77123456")
    _, _, output = deidentify_bytes(data, DeidConfig(residual_sweep=False))
    assert _verdict(data, output).problems == ("original AccessionNumber value found",)


def test_digits_that_are_not_the_id_pass() -> None:
    def verdict(kernel: str) -> Verdict:
        data = _kernel("MRN4821397", kernel, StudyID="ST55501")
        _, _, output = deidentify_bytes(data, _keeping("ConvolutionKernel", "StudyID"))
        assert kernel.encode() in output
        return _verdict(data, output, Gate(["StudyID"]))

    assert verdict("4821397").problems == ("original PatientID value found",)
    for kernel in (
        "48213971",  # a longer number
        "14821397",
        "55501",  # the digits of a short ID (StudyID ST55501): in too many files
        "B4821397F",  # a 7-digit run with letters glued on is another word for the gate
        "4821397.5",  # a decimal
    ):
        found = verdict(kernel)
        assert found.ok, (kernel, found.problems)


def _retained(patient_id: str, root: str) -> tuple[bytes, bytes]:
    source = make_instance()
    source.PatientID = patient_id
    source.StudyInstanceUID, source.SeriesInstanceUID = root + ".1", root + ".2"
    source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = root + ".4.1"
    source.FrameOfReferenceUID = root + ".3"
    data = to_bytes(source)
    _, _, output = deidentify_bytes(data, DeidConfig(
        options=frozenset({Option.RETAIN_UIDS})))
    return data, output


def test_uids_built_from_the_id_are_a_leak_under_retain_uids() -> None:
    data, output = _retained("MRN4821397", "1.2.826.0.1.3680043.2.1125.4821397")
    assert b"1125.4821397.4.1" in output
    assert _verdict(data, output, Gate(["RetainUIDs"])).problems == (
        "original PatientID value found",)
    # the ID as the UID's last component, and an all-digit ID
    data, output = _retained("4821397", "1.2.826.0.1.3680043.2.1125.9.4821397")
    assert _verdict(data, output, Gate(["RetainUIDs"])).problems == (
        "original PatientID value found",)


def test_uids_that_do_not_hold_the_id_as_a_component_pass() -> None:
    def verdict(patient_id: str, root: str) -> Verdict:
        data, output = _retained(patient_id, root)
        return _verdict(data, output, Gate(["RetainUIDs"]))

    root = "1.2.826.0.1.3680043.2.1125."
    assert not verdict("MRN4821397", root + "4821397").ok
    for other in ("48213970", "14821397"):  # other components
        found = verdict("MRN4821397", root + other)
        assert found.ok, (other, found.problems)
    # the test instances' own root (1.2.826.0.1.3680043.10.543): no component of the ID;
    # a 5-digit ID (10008) is a component of every standard UID (1.2.840.10008...)
    for patient_id in ("MRN4821397", "MRN10008"):
        found = verdict(patient_id, ROOT.rstrip("."))
        assert found.ok, (patient_id, found.problems)
