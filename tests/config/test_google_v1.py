"""Google's GA (v1) ``DeidentifyConfig.dicom`` (``DicomConfig``): pasted as is, mapped
exactly onto the model a v1beta1 ``dicomTagConfig`` gives, and what it does to an
instance; the clear errors for what Google would refuse or this tool cannot honour."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset

from dicom_deid.config.google import load_config
from dicom_deid.config.model import (
    PrimaryIds,
    ProfileType,
    TextRedactionMode,
    TransformationKind,
)
from dicom_deid.errors import ConfigError
from instances import ROOT, deidentify_bytes, make_instance, to_bytes


def _error(source: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return str(info.value)


def _run(doc: dict[str, Any]) -> tuple[Dataset, Dataset]:
    """(the input, its de-identified output) under the config ``doc``."""
    source = make_instance()
    out, _, _ = deidentify_bytes(to_bytes(source), load_config(doc))
    return source, out


# -- the mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_profile", "profile"),
    [
        # Google: "No tag filtration profile provided. Same as KEEP_ALL_PROFILE."
        ("TAG_FILTER_PROFILE_UNSPECIFIED", ProfileType.KEEP_ALL),
        ("MINIMAL_KEEP_LIST_PROFILE", ProfileType.MINIMAL_KEEP_LIST),
        ("ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE", ProfileType.BASIC),
        ("KEEP_ALL_PROFILE", ProfileType.KEEP_ALL),
        ("DEIDENTIFY_TAG_CONTENTS", ProfileType.DEIDENTIFY_TAG_CONTENTS),
    ],
)
def test_filter_profiles_map_one_to_one(filter_profile: str, profile: ProfileType) -> None:
    config = load_config({"dicom": {"filterProfile": filter_profile}})
    assert config.profile is profile
    assert config.actions == ()
    # skipIdRedaction unset: Google regenerates the primary UIDs, whatever the profile.
    assert config.primary_ids is PrimaryIds.REGEN


def test_an_empty_dicom_config_is_keep_all_with_new_primary_uids() -> None:
    config = load_config({"dicom": {}})
    assert (config.profile, config.primary_ids) == (ProfileType.KEEP_ALL, PrimaryIds.REGEN)


@pytest.mark.parametrize(("skip", "primary"), [(True, PrimaryIds.KEEP),
                                                (False, PrimaryIds.REGEN)])
def test_skip_id_redaction_is_primary_ids(skip: bool, primary: PrimaryIds) -> None:
    doc = {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
                     "skipIdRedaction": skip}}
    assert load_config(doc).primary_ids is primary


def test_every_envelope_and_spelling_is_accepted() -> None:
    body = {"filterProfile": "KEEP_ALL_PROFILE", "skipIdRedaction": True}
    expected = load_config({"dicom": body})
    assert load_config({"config": {"dicom": body},
                        "destinationStore": "projects/p/locations/l/datasets/d/dicomStores/s"}
                       ) == expected
    assert load_config(body) == expected  # a bare DicomConfig
    assert load_config({"dicom": {"filter_profile": "KEEP_ALL_PROFILE",
                                  "skip_id_redaction": True}}) == expected


def test_v1_text_image_and_extension_blocks_go_with_dicom() -> None:
    config = load_config({
        "dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
                  "skipIdRedaction": True},
        "text": {"transformations": [{"infoTypes": ["PERSON_NAME"],
                                      "replaceWithInfoTypeConfig": {}}]},
        "image": {"textRedactionMode": "REDACT_ALL_TEXT"},
        "dicomDeid": {"ps315Options": ["RetainUIDs"], "idPrefix": "HOSP"},
    })
    assert config.text.transformations[0].kind is TransformationKind.REPLACE_WITH_INFO_TYPE
    assert config.image.text_redaction_mode is TextRedactionMode.REDACT_ALL_TEXT
    assert config.id_prefix == "HOSP"
    assert config.primary_ids is PrimaryIds.KEEP


# -- what it does to an instance ------------------------------------------------------------


def test_keep_list_keeps_the_listed_tags_and_removes_all_others() -> None:
    source, out = _run({"dicom": {"keepList": {"tags": [
        "PatientSex", "SeriesDescription", "00080060"]}}})
    assert (out.PatientSex, out.SeriesDescription, out.Modality) == ("F", "Axial 5mm", "CT")
    # Everything else goes, as the IOD allows: Type 3 deleted, Type 2 emptied.
    for keyword in ("InstitutionName", "StationName", "DeviceSerialNumber", "PatientAge",
                    "OtherPatientIDsSequence", "RequestAttributesSequence"):
        assert keyword not in out, keyword
    assert out.PatientName == "" and out.PatientID == ""
    assert not [e for e in out if e.tag.is_private]
    # What a readable instance needs stays, unlisted; the primary UIDs are regenerated.
    for keyword in ("SOPClassUID", "Rows", "Columns", "BitsAllocated", "BitsStored",
                    "HighBit", "PixelRepresentation", "SamplesPerPixel",
                    "PhotometricInterpretation", "PixelData"):
        assert out[keyword].value == source[keyword].value, keyword
    assert out.StudyInstanceUID.startswith("2.25.")
    assert out.SOPInstanceUID.startswith("2.25.")
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_keep_list_with_skip_id_redaction_keeps_the_primary_uids_only() -> None:
    _, out = _run({"dicom": {"keepList": {"tags": ["PatientSex"]}, "skipIdRedaction": True}})
    assert out.StudyInstanceUID == ROOT + "1"
    assert out.SeriesInstanceUID == ROOT + "2"
    assert out.SOPInstanceUID == ROOT + "3.1"
    assert "FrameOfReferenceUID" not in out or out.FrameOfReferenceUID != ROOT + "4"


def test_remove_list_removes_the_listed_tags_and_keeps_all_others() -> None:
    source, out = _run({"dicom": {"removeList": {"tags": [
        "PatientName", "00100020", "InstitutionName", "StationName"]}}})
    assert "InstitutionName" not in out and "StationName" not in out  # Type 3
    assert out.PatientName == "" and out.PatientID == ""  # Type 2: emptied, not deleted
    for keyword in ("Manufacturer", "SeriesDescription", "PatientSex", "DeviceSerialNumber"):
        assert out[keyword].value == source[keyword].value, keyword
    assert out.StudyInstanceUID.startswith("2.25.")  # skipIdRedaction false: regenerated


# -- what is refused -----------------------------------------------------------------------


def test_dicom_and_dicom_tag_config_together() -> None:
    message = _error({"dicom": {"filterProfile": "KEEP_ALL_PROFILE"},
                      "dicomTagConfig": {"profileType": "KEEP_ALL_PROFILE"}})
    assert message.startswith("dicom: give either dicom (the v1 DicomConfig) or "
                              "dicomTagConfig (v1beta1), not both")


def test_the_tag_filters_are_alternatives() -> None:
    message = _error({"dicom": {"filterProfile": "KEEP_ALL_PROFILE",
                                "removeList": {"tags": ["PatientName"]}}})
    assert message.startswith("dicom.removeList: filterProfile, keepList and removeList are "
                              "alternatives")
    assert _error({"dicom": {"keepList": {"tags": []}, "removeList": {"tags": []}}}
                  ).startswith("dicom.removeList: filterProfile, keepList and removeList")


def test_malformed_v1_fields_name_their_path() -> None:
    assert _error({"dicom": {"filterProfile": "BASIC"}}).startswith(
        "dicom.filterProfile: 'BASIC' is not one of: TAG_FILTER_PROFILE_UNSPECIFIED")
    assert _error({"dicom": {"skipIdRedaction": "yes"}}).startswith(
        "dicom.skipIdRedaction: must be true or false")
    assert _error({"dicom": {"keepList": ["PatientID"]}}).startswith(
        "dicom.keepList: must be a JSON object")
    assert _error({"dicom": {"keepList": {"tag": ["PatientID"]}}}).startswith(
        "dicom.keepList.tag: unknown key; expected one of: tags")
    message = _error({"dicom": {"removeList": {"tags": ["PatientName", "PatientNme"]}}})
    assert message.startswith("dicom.removeList.tags[1]: 'PatientNme' is not a tag ID")
    assert "did you mean 'PatientName'" in message
    assert _error({"dicom": {"keepList": {"tags": ["PN"]}}}).startswith(
        "dicom.keepList.tags[0]: PN is a VR; a tag list takes DICOM keywords or tag IDs")


def test_the_two_versions_are_not_mixed() -> None:
    assert _error({"dicom": {"profileType": "KEEP_ALL_PROFILE"}}).startswith(
        "dicom.profileType: a v1beta1 DicomTagConfig field: it goes in \"dicomTagConfig\"")
    assert _error({"dicomTagConfig": {"filterProfile": "KEEP_ALL_PROFILE"}}).startswith(
        "dicomTagConfig.filterProfile: a v1 DicomConfig field: the v1 DicomConfig goes in "
        "\"dicom\"")
    assert _error({"filterProfile": "KEEP_ALL_PROFILE", "actions": []}).startswith(
        "(top level): mixes the v1 DicomConfig (filterProfile")
    assert _error({"filterProfile": "KEEP_ALL_PROFILE", "dicomDeid": {}}).startswith(
        "filterProfile: DicomConfig fields go inside dicom when DeidentifyConfig fields")


def test_removing_what_a_readable_image_needs_is_refused() -> None:
    message = _error({"dicom": {"removeList": {"tags": ["PatientName", "Rows"]}}})
    assert message.startswith("dicom.removeList.tags[1]: removing Rows (00280010) is not "
                              "allowed: it belongs to the Image Pixel module")
    message = _error({"dicom": {"keepList": {"tags": ["00100000"]}}})
    assert message.startswith("dicom.keepList.tags[0]: keeping 00100000 is not allowed: "
                              "group lengths are always removed")


def test_removing_a_uid_skip_id_redaction_keeps_is_refused() -> None:
    message = _error({"dicom": {"removeList": {"tags": ["PatientName", "SOPInstanceUID"]},
                                "skipIdRedaction": True}})
    assert message.startswith("dicom.removeList.tags[1]: skipIdRedaction true keeps this UID")


def test_retain_uids_needs_skip_id_redaction() -> None:
    """v1 regenerates the primary UIDs unless told not to: with RetainUIDs that would split
    them from the UIDs referencing them."""
    doc: dict[str, Any] = {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"},
                           "dicomDeid": {"ps315Options": ["RetainUIDs"]}}
    message = _error(doc)
    assert message.startswith("dicom.skipIdRedaction: skipIdRedaction false (the default) "
                              "regenerates the Study, Series and SOP Instance UIDs")
    assert message.endswith("drop RetainUIDs, or set skipIdRedaction true")
    doc["dicom"]["skipIdRedaction"] = True
    assert load_config(doc).primary_ids is PrimaryIds.KEEP


def test_retain_options_need_the_basic_filter_profile() -> None:
    message = _error({"dicom": {"filterProfile": "KEEP_ALL_PROFILE"},
                      "dicomDeid": {"ps315Options": ["RetainPatientCharacteristics"]}})
    assert message.startswith("dicomDeid.ps315Options: RetainPatientCharacteristics: the "
                              "PS3.15 retain options modify the Basic Profile")
