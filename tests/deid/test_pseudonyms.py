"""Keyed pseudonyms: deterministic per key, unrelated across keys, standard UIDs untouched."""

import re
from datetime import date
from pathlib import Path

import pydicom
import pytest

from dicom_deid.deid.gate import Gate
from dicom_deid.deid.keys import generate_key_file, load_key, parse_key
from dicom_deid.deid.pseudonyms import Pseudonymizer, is_well_known_uid, names_standard_uids
from dicom_deid.errors import KeyConfigError
from instances import deidentify_bytes, to_bytes

K1 = bytes(range(32))
K2 = bytes(range(1, 33))


def test_uids_are_keyed_2_25_and_stable() -> None:
    a, b = Pseudonymizer(K1), Pseudonymizer(K2)
    uid = "1.2.826.0.1.3680043.10.543.1.2.3"
    new = a.uid(uid)
    assert re.fullmatch(r"2\.25\.[1-9]\d*", new) and len(new) <= 64
    assert Pseudonymizer(K1).uid(uid) == new
    assert b.uid(uid) != new
    assert a.uid(uid + ".4") != new


def test_well_known_uids_never_change() -> None:
    p = Pseudonymizer(K1)
    for uid in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.2.16.4",
                "1.2.840.10008.5.1.4.1.1.88.99.12345"):
        assert is_well_known_uid(uid)
        assert p.uid(uid) == uid


def test_instance_uids_minted_under_the_dicom_root_are_replaced() -> None:
    """Devices that mint UIDs under 1.2.840.10008 put dates and record numbers in them."""
    p = Pseudonymizer(K1)
    for uid in ("1.2.840.10008.999.7734521.1", "1.2.840.10008.5.1.4.1.1.4.20240115.1"):
        assert not is_well_known_uid(uid)
        assert p.uid(uid).startswith("2.25.")


def test_identifier_pseudonyms_fit_their_vr_and_use_the_prefix() -> None:
    p = Pseudonymizer(K1, prefix="HOSP")
    assert p.patient_id("MRN1234567").startswith("HOSP")
    assert len(p.accession_number("ACC99887766")) == 16
    assert len(p.study_id("STUDY1")) == 16
    assert p.patient_name("Smith^John") == p.patient_name("SMITH^JOHN ")
    assert p.patient_id("MRN1") != p.accession_number("MRN1")


def test_date_shift_is_per_patient_nonzero_and_bounded() -> None:
    p = Pseudonymizer(K1, max_shift_days=30)
    shifts = {p.date_shift_days(f"pid:|P{i}") for i in range(200)}
    assert 0 not in shifts and max(abs(s) for s in shifts) <= 30 and len(shifts) > 20
    d1, d2 = date(2023, 1, 1), date(2023, 3, 1)
    assert p.shift_date("x", d2) - p.shift_date("x", d1) == d2 - d1


def test_keys_have_no_default_and_a_minimum_length(tmp_path) -> None:
    with pytest.raises(KeyConfigError):
        load_key(None, environ={})
    with pytest.raises(KeyConfigError):
        parse_key(b"00" * 16)
    assert parse_key(("ab" * 32).encode()) == bytes([0xAB]) * 32
    assert parse_key(bytes(range(200, 232))) == bytes(range(200, 232))  # raw binary
    with pytest.raises(KeyConfigError, match="passphrase"):
        parse_key(b"correct horse battery staple, and then some more!")  # 32+ characters
    import base64
    b64 = base64.b64encode(bytes(32))
    assert parse_key(b64) == bytes(32)
    with pytest.raises(KeyConfigError, match="hex"):
        parse_key(b64, hex_only=True)  # an Airflow connection: the keygen format only
    path = tmp_path / "k"
    generate_key_file(path)
    assert len(load_key(path)) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(KeyConfigError):
        generate_key_file(path)
    assert load_key(None, environ={"DICOM_DEID_KEY": "cd" * 32}) == bytes([0xCD]) * 32


def test_a_name_written_with_other_spaces_or_trailing_carets_is_one_name() -> None:
    """A second probe: " Kowalczyk ^ Jan" got another pseudonym than "KOWALCZYK^JAN"."""
    p = Pseudonymizer(bytes(range(32)))
    same = {p.patient_name(n) for n in ("Kowalczyk^Jan", "KOWALCZYK^JAN", " Kowalczyk ^ Jan",
                                        "Kowalczyk^Jan^^^", "Kowalczyk^Jan=", "kowalczyk^ jan")}
    assert len(same) == 1
    assert p.patient_name("Kowalczyk^Anna") not in same
    assert p.patient_name("Jan^Kowalczyk") not in same  # the order of components counts


def test_an_instance_uid_minted_under_the_dicom_root_with_short_arcs_is_replaced() -> None:
    """Probe 15: a study UID ``1.2.840.10008.77.2023...`` (short arcs, as a newer
    standard UID would have) was kept as standard, then found by the gate and the file
    rejected. In an attribute that names an instance only the registry's UIDs are kept;
    in one that names a class, a newer class is still kept."""
    p = Pseudonymizer(K1)
    minted = "1.2.840.10008.77.2023.1114.48213.97"
    assert names_standard_uids(0x00080016) and names_standard_uids(0x00020010)
    assert not names_standard_uids(0x0020000D) and not names_standard_uids(0x00081155)
    assert p.uid(minted, standard=False).startswith("2.25.")
    assert p.uid(minted) == minted  # as a SOP class, a newer one than the registry's
    assert p.uid("1.2.840.10008.1.20.1.1", standard=False) == "1.2.840.10008.1.20.1.1"


def test_a_minted_root_uid_file_is_released_through_both_paths() -> None:
    """pydicom's CT_small with its study, series and instance UIDs minted under the root:
    both paths replace them, and the gate passes the output."""
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    ds.StudyInstanceUID = "1.2.840.10008.77.2023.1114.48213.97"
    ds.SeriesInstanceUID = ds.StudyInstanceUID + ".2"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ds.SeriesInstanceUID + ".15"
    out, _, data = deidentify_bytes(to_bytes(ds))
    assert b"1.2.840.10008.77" not in data
    assert out.SOPInstanceUID.startswith("2.25.") and out.SOPClassUID == ds.SOPClassUID
    gate = Gate()
    facts = gate.source_facts(to_bytes(ds))
    uids = {0x0020000D: out.StudyInstanceUID, 0x0020000E: out.SeriesInstanceUID,
            0x00080018: out.SOPInstanceUID}
    assert gate.check("x.dcm", data, facts, uids).ok
