"""Every profile and action writes an instance no less valid than its input.

The Basic Profile's removals were already resolved by the attribute's Type where it is; these
tests hold the same for the cleaning options under the other profiles, MINIMAL_KEEP_LIST,
DEIDENTIFY_TAG_CONTENTS, ``primaryIds`` with the UIDs that reference the primary ones, and
Google's resetTag: first the plan's answer at named places, then the de-identified dataset
(both engine paths, :func:`instances.deidentify_bytes`).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedSRStorage, ExplicitVRLittleEndian

from dicom_deid.config.google import load_config
from dicom_deid.config.iod import AttributeType, iod_named
from dicom_deid.config.model import (
    DeidConfig,
    Option,
    PrimaryIds,
    ProfileType,
    TextConfig,
    Transformation,
    TransformationKind,
)
from dicom_deid.config.plan import Act, Mode, Plan, Scope, referencing_uid_tags
from instances import ROOT, deidentify_bytes, make_instance, to_bytes

CT: Scope = ("ct-image", "")
SR: Scope = ("enhanced-sr", "")
SR_ITEM: Scope = ("enhanced-sr", "ContentSequence")
SR_CODE: Scope = ("enhanced-sr", "ConceptNameCodeSequence")
REQUEST: Scope = ("ct-image", "RequestAttributesSequence")
NAME = "Zarkovsky^Belinda"


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return tag


def _act(plan: Plan, keyword: str, scope: Scope, mode: Mode = Mode.NORMAL) -> Act:
    tag = _tag(keyword)
    return plan.act(tag, dictionary_VR(tag).split(" ")[0], mode, scope)


def _google(dicom_tag_config: dict[str, Any]) -> Plan:
    return Plan(load_config({"dicomTagConfig": dicom_tag_config}))


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _content_item(relationship: str, value_type: str, concept: Dataset, **value: str) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = relationship, value_type
    item.ConceptNameCodeSequence = Sequence([concept])
    for keyword, text in value.items():
        setattr(item, keyword, text)
    return item


def make_enhanced_sr() -> Dataset:
    """An Enhanced SR with the patient's name, dates and an MRN in its header and content."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedSRStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ROOT + "9.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = EnhancedSRStorage
    ds.SOPInstanceUID = ROOT + "9.1"
    ds.StudyInstanceUID = ROOT + "1"
    ds.SeriesInstanceUID = ROOT + "9"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = NAME, "MRN4821397", \
        "19700203", "F"
    ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = "20240115", "101500", \
        "20240115", "104000"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "ACC77123", "ST555", ""
    ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "SR", "ACME", 9, 1
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = Sequence([])
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    ds.ContentSequence = Sequence([
        _content_item("CONTAINS", "TEXT", _code("121071", "DCM", "Finding"),
                      TextValue="Belinda Zarkovsky MRN4821397, nodule 4 mm"),
        _content_item("HAS OBS CONTEXT", "PNAME", _code("121008", "DCM", "Person Observer Name"),
                      PersonName="Pellingham^Oswald"),
        _content_item("CONTAINS", "DATE", _code("111060", "DCM", "Study Date"), Date="20240115"),
    ])
    return ds


def _run(ds: Dataset, config: DeidConfig) -> Dataset:
    return deidentify_bytes(to_bytes(ds), config)[0]


# -- Finding 3: the cleaning options under every profile ------------------------------------
@pytest.mark.parametrize("profile", ["KEEP_ALL_PROFILE", "MINIMAL_KEEP_LIST_PROFILE",
                                     "DEIDENTIFY_TAG_CONTENTS"])
def test_the_cleaning_options_clean_what_any_profile_keeps(profile: str) -> None:
    plan = _google({"profileType": profile, "options": {"cleanDescriptors": {}}})
    # Required by the IOD where it is (so kept under MINIMAL too), C under Clean Descriptors.
    source_series = ("rt-structure-set", "SourceSeriesInformationSequence")
    expected = Act.CLEAN_TEXT if profile == "DEIDENTIFY_TAG_CONTENTS" else Act.CLEAN
    if profile == "MINIMAL_KEEP_LIST_PROFILE":
        expected = Act.DUMMY  # identifying and Type 1 there: MINIMAL's own removal
    assert _act(plan, "SeriesDescription", source_series) is expected
    # A sequence an option cleans is recursed into in CLEAN mode wherever it is kept.
    structured = _google({"profileType": profile,
                          "actions": [{"queries": ["ContentSequence"], "recurseTag": {}}]})
    assert _act(structured, "ContentSequence", SR) is Act.RECURSE  # explicit action first


def test_keep_all_with_clean_descriptors_cleans_and_keeps_the_rest() -> None:
    plan = _google({"profileType": "KEEP_ALL_PROFILE", "options": {"cleanDescriptors": {}}})
    assert _act(plan, "StudyDescription", CT) is Act.CLEAN
    assert _act(plan, "ImageComments", CT) is Act.CLEAN
    assert _act(plan, "RequestAttributesSequence", CT) is Act.RECURSE_CLEAN
    assert _act(plan, "PatientName", CT) is Act.KEEP  # the profile's, not the option's
    assert _act(plan, "SOPInstanceUID", CT) is Act.KEEP
    # Inside a cleaned sequence UIDs stay the profile's; free text and names are cleaned.
    assert _act(plan, "ReferencedSOPInstanceUID", REQUEST, Mode.CLEAN) is Act.KEEP
    assert _act(plan, "RequestedProcedureComments", REQUEST, Mode.CLEAN) is Act.CLEAN
    plain = _google({"profileType": "KEEP_ALL_PROFILE"})
    assert _act(plain, "StudyDescription", CT) is Act.KEEP
    kept = _google({"profileType": "KEEP_ALL_PROFILE", "options": {"cleanDescriptors": {}},
                    "actions": [{"queries": ["StudyDescription"], "keepTag": {}}]})
    assert _act(kept, "StudyDescription", CT) is Act.KEEP


def test_structured_content_and_graphics_clean_under_keep_all_and_tag_contents() -> None:
    for profile in (ProfileType.KEEP_ALL, ProfileType.DEIDENTIFY_TAG_CONTENTS):
        plan = Plan(DeidConfig(profile=profile, options=frozenset(
            {Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS})))
        assert _act(plan, "ContentSequence", SR) is Act.RECURSE_CLEAN, profile
        assert _act(plan, "GraphicAnnotationSequence",
                    ("grayscale-softcopy-presentation-state", "")) is Act.RECURSE_CLEAN
        # Its items' free text is cleaned (TextValue: not in Table E.1-1), UIDs kept.
        text = _act(plan, "TextValue", SR_ITEM, Mode.CLEAN)
        assert text is (Act.CLEAN if profile is ProfileType.KEEP_ALL else Act.CLEAN_TEXT)
        assert _act(plan, "UID", SR_ITEM, Mode.CLEAN) is Act.KEEP


def test_keep_all_clean_descriptors_on_a_dataset() -> None:
    ds = make_instance()
    ds.StudyDescription = "CT for Zarkovsky tel 555-201-7788"
    ds.SeriesDescription = "Axial 5mm"
    config = load_config({"dicomTagConfig": {"profileType": "KEEP_ALL_PROFILE",
                                             "options": {"cleanDescriptors": {}}}})
    out = _run(ds, config)
    assert "555-201-7788" not in out.StudyDescription
    assert out.StudyDescription.startswith("CT for")
    assert out.SeriesDescription == "Axial 5mm"
    assert out.SOPInstanceUID == ds.SOPInstanceUID  # KEEP_ALL keeps the rest


# -- Finding 4: MINIMAL_KEEP_LIST keeps what the IOD requires ------------------------------
@pytest.mark.parametrize(("scope", "keyword", "expected"), [
    (CT, "PatientName", Act.EMPTY), (CT, "PatientID", Act.EMPTY),
    (CT, "StudyDate", Act.EMPTY), (CT, "AccessionNumber", Act.EMPTY),
    (CT, "KVP", Act.KEEP), (CT, "Manufacturer", Act.KEEP), (CT, "Laterality", Act.KEEP),
    (CT, "PositionReferenceIndicator", Act.KEEP),
    (CT, "StudyDescription", Act.DELETE), (CT, "InstitutionName", Act.DELETE),
    (CT, "Rows", Act.KEEP), (CT, "SOPInstanceUID", Act.UID),
    (SR, "ContentDate", Act.DUMMY), (SR, "ContentTime", Act.DUMMY),
    (SR, "ValueType", Act.KEEP), (SR, "CompletionFlag", Act.KEEP),
    (SR, "VerificationFlag", Act.KEEP), (SR, "ContinuityOfContent", Act.KEEP),
    (SR, "ConceptNameCodeSequence", Act.RECURSE), (SR, "ContentSequence", Act.RECURSE_STRICT),
    (SR_ITEM, "RelationshipType", Act.KEEP), (SR_ITEM, "TextValue", Act.DUMMY),
    (SR_ITEM, "PersonName", Act.DUMMY), (SR_ITEM, "Date", Act.DUMMY),
    (SR_CODE, "CodeValue", Act.KEEP), (SR_CODE, "CodeMeaning", Act.KEEP),
    (("", ""), "PatientName", Act.DELETE),  # an unknown SOP class: nothing is known required
    (("grayscale-softcopy-presentation-state", ""), "PresentationCreationDate", Act.DUMMY),
])
def test_minimal_keep_list_resolves_by_type(scope: Scope, keyword: str, expected: Act) -> None:
    plan = Plan(DeidConfig(profile=ProfileType.MINIMAL_KEEP_LIST))
    # Content items are walked as the engine walks them: Content Sequence is recursed
    # strictly (free text without a rule of its own dummied).
    mode = Mode.STRICT if scope == SR_ITEM else Mode.NORMAL
    assert _act(plan, keyword, scope, mode) is expected


def _required_top_level(iod: str, ds: Dataset) -> list[tuple[str, AttributeType]]:
    types = iod_named(iod).types
    return [(e.keyword, types[("", e.keyword)]) for e in ds
            if ("", e.keyword) in types and types[("", e.keyword)] is not AttributeType.T3
            and e.tag >> 16 & 0xFF00 != 0x6000]  # overlays go with their group


def test_minimal_keep_list_keeps_a_ct_as_valid_as_its_input() -> None:
    ds = make_instance()
    out = _run(ds, DeidConfig(profile=ProfileType.MINIMAL_KEEP_LIST))
    required = _required_top_level("ct-image", ds)
    assert len(required) > 20
    for keyword, kind in required:
        assert keyword in out, keyword
        if kind in (AttributeType.T1, AttributeType.T1C):
            assert out[keyword].value not in ("", None), keyword
    assert out.PatientName == "" and out.PatientID == "" and out.StudyDate == ""
    assert out.PatientSex == "" and out.AccessionNumber == ""
    assert "StudyDescription" not in out and "InstitutionName" not in out
    assert out.Manufacturer == ds.Manufacturer and out.PixelData == ds.PixelData
    assert not any(e.tag >> 16 == 0x6000 for e in out)  # the overlay goes whole


def test_minimal_keep_list_de_identifies_an_enhanced_sr() -> None:
    ds = make_enhanced_sr()
    out = _run(ds, DeidConfig(profile=ProfileType.MINIMAL_KEEP_LIST))
    for keyword in ("ValueType", "ContinuityOfContent", "CompletionFlag", "VerificationFlag"):
        assert out[keyword].value == ds[keyword].value, keyword
    assert out.ContentDate and out.ContentDate != ds.ContentDate
    assert out.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    assert len(out.ContentSequence) == 3
    text, person, date = out.ContentSequence
    assert [i.ValueType for i in out.ContentSequence] == ["TEXT", "PNAME", "DATE"]
    assert text.RelationshipType == "CONTAINS"
    assert text.ConceptNameCodeSequence[0].CodeValue == "121071"
    assert text.TextValue and "Zarkovsky" not in text.TextValue
    assert person.PersonName and "Pellingham" not in str(person.PersonName)
    assert date.Date and date.Date != "20240115"
    assert out.PatientName == "" and out.PatientID == ""


# -- Finding 5: primaryIds decides the UIDs that reference the primary ones -----------------
def test_referencing_uid_tags_come_from_the_dictionary() -> None:
    found = referencing_uid_tags()
    for keyword in ("ReferencedSOPInstanceUID", "ReferencedSOPInstanceUIDInFile",
                    "MultiFrameSourceSOPInstanceUID", "SOPInstanceUIDOfConcatenationSource"):
        assert _tag(keyword) in found, keyword
    assert all(dictionary_VR(t) == "UI" for t in found)
    for keyword in ("FrameOfReferenceUID", "ReferencedFrameOfReferenceUID", "SOPClassUID",
                    "ReferencedSOPClassUID", "SOPInstanceUID", "UID"):
        assert _tag(keyword) not in found, keyword


@pytest.mark.parametrize(("primary_ids", "options", "expected"), [
    (PrimaryIds.KEEP, frozenset(), Act.KEEP),
    (PrimaryIds.REGEN, frozenset(), Act.UID),
])
def test_references_follow_the_primary_uids(primary_ids: PrimaryIds, options: frozenset[Option],
                                            expected: Act) -> None:
    plan = Plan(DeidConfig(primary_ids=primary_ids, options=options))
    for keyword in ("SOPInstanceUID", "StudyInstanceUID"):
        assert _act(plan, keyword, CT) is expected
    assert _act(plan, "ReferencedSOPInstanceUID", ("ct-image", "ReferencedImageSequence")) \
        is expected
    assert _act(plan, "FrameOfReferenceUID", CT) is (
        Act.KEEP if Option.RETAIN_UIDS in options else Act.UID)


@pytest.mark.parametrize(("primary_ids", "options"), [
    (PrimaryIds.KEEP, frozenset()), (PrimaryIds.REGEN, frozenset()),
])
def test_references_resolve_between_de_identified_instances(
        primary_ids: PrimaryIds, options: frozenset[Option]) -> None:
    config = DeidConfig(primary_ids=primary_ids, options=options)
    first, second = make_instance(), make_instance()
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = ROOT + "3.2"
    second.ReferencedImageSequence[0].ReferencedSOPInstanceUID = first.SOPInstanceUID
    out_first, out_second = _run(first, config), _run(second, config)
    reference = out_second.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert reference == out_first.SOPInstanceUID
    assert (reference == first.SOPInstanceUID) is (primary_ids is PrimaryIds.KEEP)


# -- Finding 6: DEIDENTIFY_TAG_CONTENTS keeps codes and required values -----------------------
DTC = ProfileType.DEIDENTIFY_TAG_CONTENTS


@pytest.mark.parametrize(("scope", "keyword", "expected"), [
    (SR_CODE, "CodeValue", Act.KEEP), (SR_CODE, "CodingSchemeDesignator", Act.KEEP),
    (SR_CODE, "CodingSchemeVersion", Act.KEEP), (SR_CODE, "LongCodeValue", Act.KEEP),
    (SR_CODE, "URNCodeValue", Act.KEEP), (SR_CODE, "CodeMeaning", Act.CLEAN_TEXT),
    (("ct-image", "ReasonForRequestedProcedureCodeSequence"), "CodeValue", Act.KEEP),
    # A code that is a person's identity is no code to keep: required there and too short
    # for a placeholder, dummied; its meaning (room for one) cleaned.
    (("ct-image", "PersonIdentificationCodeSequence"), "CodeValue", Act.DUMMY),
    (("ct-image", "PersonIdentificationCodeSequence"), "CodeMeaning", Act.CLEAN_TEXT),
    (CT, "CodeValue", Act.CLEAN_TEXT),  # not inside a code sequence item
    (REQUEST, "RequestedProcedureID", Act.DUMMY), (REQUEST, "ScheduledProcedureStepID", Act.DUMMY),
    (SR, "ContentDate", Act.DUMMY), (SR_ITEM, "Date", Act.DUMMY),
    (CT, "StudyDate", Act.CLEAN_TEXT),  # Type 2: may be emptied
    (CT, "StudyDescription", Act.CLEAN_TEXT), (SR_ITEM, "TextValue", Act.CLEAN_TEXT),
    (SR_ITEM, "PersonName", Act.CLEAN_TEXT),  # a placeholder fits a PN
    (("", ""), "ContentDate", Act.CLEAN_TEXT),  # unknown IOD: nothing known required
])
def test_tag_contents_resolves_codes_and_required_values(scope: Scope, keyword: str,
                                                         expected: Act) -> None:
    assert _act(Plan(DeidConfig(profile=DTC)), keyword, scope) is expected


def test_tag_contents_cleans_required_values_where_cleaning_keeps_them_valid() -> None:
    shift = TextConfig(transformations=(
        Transformation(TransformationKind.DATE_SHIFT, ("DATE",)),
        Transformation(TransformationKind.REPLACE_WITH_INFO_TYPE)))
    assert _act(Plan(DeidConfig(profile=DTC, text=shift)), "ContentDate", SR) is Act.CLEAN_TEXT
    excluded = TextConfig(transformations=shift.transformations, exclude_info_types=("DATE",))
    assert _act(Plan(DeidConfig(profile=DTC, text=excluded)), "ContentDate", SR) is Act.DUMMY
    redact = TextConfig(transformations=(Transformation(TransformationKind.REDACT),))
    assert _act(Plan(DeidConfig(profile=DTC, text=redact)), "PersonName", SR_ITEM) is Act.DUMMY
    assert _act(Plan(DeidConfig(profile=DTC, text=redact)), "StudyDescription", CT) \
        is Act.CLEAN_TEXT  # Type 3: may be emptied


def test_tag_contents_on_datasets() -> None:
    out = _run(make_instance(), DeidConfig(profile=DTC))
    request = out.RequestAttributesSequence[0]
    for keyword in ("RequestedProcedureID", "ScheduledProcedureStepID"):
        assert request[keyword].value and request[keyword].value not in ("RP556677", "SPS12345")
    assert request.ReasonForRequestedProcedureCodeSequence[0].CodeValue == "R07.4"
    assert request.ReasonForRequestedProcedureCodeSequence[0].CodingSchemeDesignator == "I10"
    sr = _run(make_enhanced_sr(), DeidConfig(profile=DTC))
    assert sr.ContentDate and sr.ContentDate != "20240115"
    codes = [i.ConceptNameCodeSequence[0].CodeValue for i in sr.ContentSequence]
    assert codes == ["121071", "121008", "111060"]
    assert sr.ContentSequence[2].Date and sr.ContentSequence[2].Date != "20240115"
    assert "Zarkovsky" not in sr.ContentSequence[0].TextValue


# -- Finding 8: resetTag writes its placeholder only where it is valid ---------------------
def _reset(*keywords: str) -> Plan:
    return _google({"actions": [{"queries": list(keywords), "resetTag": {}}]})


@pytest.mark.parametrize(("scope", "keyword", "expected"), [
    (CT, "PatientSex", Act.EMPTY),  # Type 2 CS: enumerated values, empty allowed
    (CT, "Modality", Act.DUMMY),  # Type 1: what X gives there
    (CT, "ReferencedImageSequence", Act.DELETE),  # Type 3: no zero-item sequence
    (CT, "OtherPatientIDsSequence", Act.DELETE),
    (SR, "ContentSequence", Act.RECURSE_STRICT),  # Type 1C: its items stay
    (SR, "PerformedProcedureCodeSequence", Act.EMPTY),  # Type 2: zero items allowed
    (CT, "SeriesNumber", Act.EMPTY), (CT, "PatientWeight", Act.EMPTY),
    (CT, "StudyDescription", Act.RESET), (CT, "PatientName", Act.RESET),
    (CT, "StudyDate", Act.RESET), (CT, "FrameOfReferenceUID", Act.UID),
    (CT, "ReferencedPatientPhotoSequence", Act.DELETE),
    (("encapsulated-pdf", ""), "EncapsulatedDocument", Act.DUMMY_DOCUMENT),
])
def test_reset_tag_resolves_by_type(scope: Scope, keyword: str, expected: Act) -> None:
    assert _act(_reset(keyword), keyword, scope) is expected


def test_reset_tag_on_a_dataset() -> None:
    ds = make_instance()
    config = load_config({"dicomTagConfig": {"actions": [{"queries": [
        "PatientSex", "ReferencedImageSequence", "StudyDescription"],
        "resetTag": {}}]}})
    out = _run(ds, config)
    assert out.PatientSex == ""
    assert "ReferencedImageSequence" not in out
    assert out.Rows == ds.Rows and out.PixelData == ds.PixelData
    assert out.StudyDescription == "PLACEHOLDER"
