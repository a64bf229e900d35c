"""An output claims only what was done to it (PS3.15 E.1.1, PS3.3 C.7.1.1).

Patient Identity Removed, the De-identification Method Code Sequence and Longitudinal
Temporal Information Modified follow what the plan does to each attribute, not the names
of the options asked for (config/claims.py): a kept name means NO, kept dates mean
UNMODIFIED, shifted ones MODIFIED, and Clean Pixel Data is claimed only for pixels the
cleaner examined.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom.data
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UltrasoundImageStorage

from dicom_deid.config.claims import claims_of
from dicom_deid.config.google import load_config
from dicom_deid.config.model import DeidConfig, Option, PrimaryIds, ProfileType, privacy_first
from instances import deidentify_bytes, make_instance, to_bytes


def _codes(ds: Dataset) -> list[str]:
    return [i.CodeValue for i in ds.get("DeidentificationMethodCodeSequence", [])]


def _out(config: DeidConfig, ds: Dataset | None = None) -> Dataset:
    out, _, _ = deidentify_bytes(to_bytes(ds or make_instance()), config)
    return out


def _google(doc: dict[str, Any]) -> DeidConfig:
    return load_config(doc)


def test_the_default_claims_the_profile_and_clean_descriptors() -> None:
    out = _out(privacy_first())
    assert out.PatientIdentityRemoved == "YES"
    assert _codes(out) == ["113100", "113105"]
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert not any(v.startswith("kept:") for v in out.DeidentificationMethod)


def test_pixels_never_examined_are_not_claimed_clean() -> None:
    """A CT is not read by OCR under ocrScope AUTO: no Clean Pixel Data claim on it."""
    config = privacy_first()
    assert config.cleans_pixels
    assert "113101" not in _codes(_out(config))


def test_pixels_read_by_ocr_are_claimed_clean() -> None:
    ds = make_instance()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.Modality = "US"
    ds.Rows, ds.Columns = 64, 64
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((64, 64), np.uint8).tobytes()
    out = _out(privacy_first(), ds)
    assert _codes(out) == ["113100", "113105", "113101"]


def test_a_kept_name_says_identity_not_removed_and_names_what_was_kept() -> None:
    config = _google({"profileType": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
                      "actions": [{"queries": ["PatientName", "PatientID"], "keepTag": {}}]})
    ds = make_instance()
    # a source de-identified before, whose claims no longer hold after this run
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
        "113100", "DCM", "Basic Application Confidentiality Profile")
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethodCodeSequence = Sequence([item])
    out = _out(config, ds)
    assert str(out.PatientName) == "Smith^John"
    assert out.PatientIdentityRemoved == "NO"
    assert "DeidentificationMethodCodeSequence" not in out
    assert "kept: PatientID PatientName" in out.DeidentificationMethod


def test_kept_dates_are_unmodified_and_claim_full_dates() -> None:
    config = _google({"actions": [{"queries": ["StudyDate", "SeriesDate", "ContentDate"],
                                   "keepTag": {}}]})
    out = _out(config)
    assert out.StudyDate == "20230514"
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in _codes(out)


def test_dates_shifted_by_google_date_shift_are_modified() -> None:
    config = _google({
        "dicomTagConfig": {"actions": [{"queries": ["StudyDate", "SeriesDate", "ContentDate"],
                                        "cleanTextTag": {}}]},
        "text": {"transformations": [{"infoTypes": ["DATE"],
                                      "dateShiftConfig": {}}]}})
    out = _out(config)
    assert out.StudyDate not in ("", "20230514")
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "113107" in _codes(out)


def test_the_date_options_say_what_they_do() -> None:
    def dates(option: Option) -> str:
        return _out(replace(DeidConfig(), options=frozenset({option}))
                    ).LongitudinalTemporalInformationModified

    assert dates(Option.RETAIN_LONGITUDINAL_FULL_DATES) == "UNMODIFIED"
    assert dates(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES) == "MODIFIED"
    assert _out(DeidConfig()).LongitudinalTemporalInformationModified == "REMOVED"
    # the modified-dates option keeps times of day (a whole-day shift): not full dates
    assert claims_of(replace(DeidConfig(), options=frozenset(
        {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))).options == {
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}


def test_kept_primary_uids_claim_retain_uids() -> None:
    config = replace(DeidConfig(), primary_ids=PrimaryIds.KEEP)
    claims = claims_of(config)
    assert claims.identity_removed
    assert Option.RETAIN_UIDS in claims.options


def test_keep_all_claims_no_removal_and_counts_what_it_kept() -> None:
    out = _out(replace(DeidConfig(), profile=ProfileType.KEEP_ALL))
    assert out.PatientIdentityRemoved == "NO"
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    kept = [v for v in out.DeidentificationMethod if v.startswith("kept:")]
    assert len(kept) == 3 and kept[-1].endswith("more attributes")
    assert all(len(v) <= 64 for v in out.DeidentificationMethod)


def test_the_minimal_keep_list_removes_dates() -> None:
    claims = claims_of(replace(DeidConfig(), profile=ProfileType.MINIMAL_KEEP_LIST))
    assert claims.identity_removed
    assert claims.dates == "REMOVED"


def test_pydicom_files_claim_clean_pixels_only_where_they_were_examined() -> None:
    """On pydicom's own files, through both paths: its CT (not read by OCR under AUTO)
    claims the profile without Clean Pixel Data; its secondary capture (read) claims it."""
    files = Path(pydicom.data.__file__).parent / "test_files"
    ct, _, _ = deidentify_bytes((files / "CT_small.dcm").read_bytes(), privacy_first())
    assert ct.PatientIdentityRemoved == "YES" and _codes(ct) == ["113100", "113105"]
    sc, _, _ = deidentify_bytes((files / "SC_rgb_small_odd.dcm").read_bytes(),
                                privacy_first())
    assert _codes(sc) == ["113100", "113105", "113101"]
