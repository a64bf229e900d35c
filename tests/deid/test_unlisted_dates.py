"""Dates and times Table E.1-1 does not list are the patient's record's dates.

An external probe found the default policy keeping Study Update DateTime (0008,041F)
``20240105101500`` byte for byte, the study's own date, while the output claimed
Longitudinal Temporal Information Modified REMOVED: PS3.6 has the attribute, PS3.15 2026c's
table has no row for it, and whatever the table does not list was kept. Every date and time
of pydicom's dictionary (VR DA, DT or TM) without a row or a code of the project's now gets
the row the table gives its own dates (``config.plan.unlisted_dates``): removed (a dummy or
empty where the IOD requires it), shifted under Retain Longitudinal Modified Dates, kept
under Retain Longitudinal Full Dates, a calibration date also under Retain Device Identity,
at any depth and however it is written (explicit VR, implicit VR, UN); the claims count it.
"""

from __future__ import annotations

from datetime import date

import pytest
from pydicom.datadict import DicomDictionary, dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from test_type1_dummies import both_paths

from dicom_deid.config.claims import claims_of
from dicom_deid.config.google import load_config
from dicom_deid.config.iod import AttributeType, iod_named
from dicom_deid.config.model import DeidConfig, Option, ProfileType, privacy_first
from dicom_deid.config.plan import Act, Mode, Plan, Scope, beyond_table, unlisted_dates
from dicom_deid.config.ps3_15 import ActionCode, load_table
from dicom_deid.deid.gate import Gate
from instances import make_instance, to_bytes

FULL = Option.RETAIN_LONGITUDINAL_FULL_DATES
MODIFIED = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES
DEVICE = Option.RETAIN_DEVICE_IDENTITY
INVENTORY = "1.2.840.10008.5.1.4.1.1.201.1"
ROOT = "1.2.826.0.1.3680043.99.9."
PLANTED = {  # keyword: (VR, value): none of these values is anywhere else in the instance
    "StudyUpdateDateTime": ("DT", "20240105101517"),
    "SecondaryReviewDate": ("DA", "20240106"),
    "SecondaryReviewTime": ("TM", "142233"),
    "ExpiryDate": ("DA", "20240107"),
    "AlarmDecisionTime": ("DT", "20240108093344"),
    "DateOfGainCalibration": ("DA", "20231109"),
    "TimeOfGainCalibration": ("TM", "071155"),
}
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return tag


def _with_options(*options: Option) -> DeidConfig:
    """The default policy with ``options`` added to its Clean Descriptors."""
    return privacy_first(options=frozenset({Option.CLEAN_DESCRIPTORS, *options}))


def _planted(syntax: str = ExplicitVRLittleEndian, as_un: bool = False) -> Dataset:
    """make_instance's CT with the unlisted dates at the top level and in the item of a
    sequence the profile keeps (Referenced Image Sequence: its UIDs are replaced), written
    with their own VR, or UN."""
    ds = make_instance()
    ds.file_meta.TransferSyntaxUID = syntax
    reference = ds.ReferencedImageSequence[0]
    for keyword, (vr, value) in PLANTED.items():
        for level in (ds, reference):
            if as_un:
                level.add_new(_tag(keyword), "UN", value.encode("ascii"))
            else:
                level.add_new(_tag(keyword), vr, value)
    return ds


def _values(written: bytes) -> list[str]:
    return [value for _, value in PLANTED.values() if value.encode("ascii") in written]


# -- the list ----------------------------------------------------------------------------
def test_every_date_of_the_dictionary_gets_a_code() -> None:
    """Generated from the dictionary: a date or time with neither a row of the table nor
    a code of the project's has a row of its own, and no listed one gets a second row."""
    table, beyond, dates = load_table(), beyond_table(), unlisted_dates()
    for tag, (vr, *_) in DicomDictionary.items():
        if vr in ("DA", "DT", "TM"):
            listed = table.row_for(tag) is not None or tag in beyond
            assert listed is (tag not in dates), hex(tag)
    assert {_tag(k) for k in (*PLANTED, "ItemInventoryDateTime", "ExpirationDateTime",
                              "ProcedureCreationDate", "ProcedureExpirationDate",
                              "ProcedureLastModifiedDate", "RouteSegmentStartTime",
                              "RouteSegmentEndTime")} <= set(dates)
    assert all(dictionary_VR(tag) in ("DA", "DT", "TM") for tag in dates)


def test_the_rows_are_the_tables_own_for_its_dates() -> None:
    """A date is removed, kept with full dates and cleaned (shifted) with modified ones,
    as most of the table's are; a calibration date as Date of Last Calibration is, kept
    under Retain Device Identity too."""
    dates, table = unlisted_dates(), load_table()
    update = dates[_tag("StudyUpdateDateTime")]
    assert update.basic is ActionCode.X
    assert dict(update.option_codes) == {FULL: ActionCode.K, MODIFIED: ActionCode.C}
    for unlisted, listed in (("DateOfGainCalibration", "DateOfLastCalibration"),
                             ("TimeOfGainCalibration", "TimeOfLastCalibration")):
        row, known = dates[_tag(unlisted)], table.exact[_tag(listed)]
        assert (row.basic, row.option_codes) == (known.basic, known.option_codes), unlisted
        assert dict(row.option_codes)[DEVICE] is ActionCode.K


# -- the default policy --------------------------------------------------------------------
@pytest.mark.parametrize("syntax", SYNTAXES, ids=["explicit", "implicit"])
def test_the_default_removes_them_at_every_depth(syntax: str) -> None:
    out, written = both_paths(to_bytes(_planted(syntax)), privacy_first())
    for keyword in PLANTED:
        assert keyword not in out, keyword
        assert keyword not in out.ReferencedImageSequence[0], keyword
    assert _values(written) == []
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_written_as_un_they_are_removed_too() -> None:
    out, written = both_paths(to_bytes(_planted(as_un=True)), privacy_first())
    assert _values(written) == []
    assert not any(_tag(k) in out or _tag(k) in out.ReferencedImageSequence[0]
                   for k in PLANTED)


# -- the date options ----------------------------------------------------------------------
def _shifted_days(out: Dataset) -> int:
    """How many days the instance's dates moved (StudyDate was 2023-05-14)."""
    moved = date(int(out.StudyDate[:4]), int(out.StudyDate[4:6]), int(out.StudyDate[6:]))
    return (moved - date(2023, 5, 14)).days


def _shift(value: str, days: int) -> str:
    moved = date.fromordinal(date(int(value[:4]), int(value[4:6]), int(value[6:8])
                                  ).toordinal() + days)
    return moved.strftime("%Y%m%d") + value[8:]


@pytest.mark.parametrize(("syntax", "as_un"), [(ExplicitVRLittleEndian, False),
                                               (ImplicitVRLittleEndian, False),
                                               (ExplicitVRLittleEndian, True)],
                         ids=["explicit", "implicit", "un"])
def test_modified_dates_shift_them_as_the_others(syntax: str, as_un: bool) -> None:
    out, _ = both_paths(to_bytes(_planted(syntax, as_un)), _with_options(MODIFIED))
    days = _shifted_days(out)
    assert days != 0
    for level in (out, out.ReferencedImageSequence[0]):
        for keyword, (vr, value) in PLANTED.items():
            # Dates by the patient's own days, time of day kept (as Study Time is).
            expected = value if vr == "TM" else _shift(value, days)
            assert level[_tag(keyword)].value == expected, keyword
            assert vr == level[_tag(keyword)].VR, keyword  # UN gets the dictionary's VR
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert claims_of(_with_options(MODIFIED)).options == {Option.CLEAN_DESCRIPTORS, MODIFIED}


@pytest.mark.parametrize("syntax", SYNTAXES, ids=["explicit", "implicit"])
def test_full_dates_keep_them_and_say_unmodified(syntax: str) -> None:
    data = to_bytes(_planted(syntax))
    out, written = both_paths(data, _with_options(FULL))
    assert sorted(_values(written)) == sorted(value for _, value in PLANTED.values())
    for keyword, (_, value) in PLANTED.items():
        assert out[keyword].value == value and out.ReferencedImageSequence[0][keyword].value \
            == value, keyword
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]


def test_a_keep_tag_on_one_of_them_is_full_dates_not_removed() -> None:
    """Google's keepTag on Study Update DateTime keeps it, and the claims say so: the dates
    are not all removed, and keeping one is what Retain Longitudinal Full Dates allows."""
    config = load_config({"dicomTagConfig": {
        "profileType": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
        "actions": [{"queries": ["StudyUpdateDateTime"], "keepTag": {}}]}})
    out, _ = both_paths(to_bytes(_planted()), config)
    assert out.StudyUpdateDateTime == PLANTED["StudyUpdateDateTime"][1]
    assert "SecondaryReviewDate" not in out and out.StudyDate == ""
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert out.PatientIdentityRemoved == "YES"
    assert FULL in claims_of(config).options


def test_device_identity_keeps_the_calibration_dates_only() -> None:
    out, _ = both_paths(to_bytes(_planted()), _with_options(DEVICE))
    for keyword in ("DateOfGainCalibration", "TimeOfGainCalibration"):
        assert out[keyword].value == PLANTED[keyword][1], keyword
    for keyword in ("StudyUpdateDateTime", "SecondaryReviewDate", "ExpiryDate"):
        assert keyword not in out, keyword
    # Calibration dates kept as they were: not all dates are removed (as the table's own).
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


# -- where the IOD requires them -----------------------------------------------------------
def _inventory(syntax: str) -> Dataset:
    """An Inventory instance (PS3.3 A.88): in the items of Inventoried Studies Sequence,
    Item Inventory DateTime is Type 1 and Study Update DateTime Type 2."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = INVENTORY
    ds.file_meta.MediaStorageSOPInstanceUID = ROOT + "1"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = INVENTORY, ROOT + "1"
    ds.Manufacturer = "ACME"
    ds.ContentDate, ds.ContentTime = "20240105", "101500"
    ds.InventoryLevel, ds.InventoryCompletionStatus, ds.InventoryPurpose = "STUDY", "COMPLETE", ""
    ds.TotalNumberOfStudyRecords = ds.NumberOfStudyRecordsInInstance = 1
    ds.ScopeOfInventorySequence = Sequence([])
    ds.IncorporatedInventoryInstanceSequence = Sequence([])
    study = Dataset()
    study.StudyInstanceUID = ROOT + "2"
    study.StudyDate, study.StudyTime = "20240105", "101500"
    study.StudyUpdateDateTime = "20240109101517"
    study.ItemInventoryDateTime = "20240110103022"
    study.StudyDescription, study.StudyID, study.AccessionNumber = "CT chest", "S1", "ACC77120"
    study.PatientName, study.PatientID = "Kowalski^Janina", "MRN4821397"
    study.PatientBirthDate, study.PatientSex = "19570314", "F"
    study.ModalitiesInStudy = "CT"
    study.NumberOfStudyRelatedSeries = study.NumberOfStudyRelatedInstances = 1
    ds.InventoriedStudiesSequence = Sequence([study])
    return ds


def _required(scope: Scope, level: Dataset) -> dict[str, AttributeType]:
    """The attributes of ``level`` the IOD requires at ``scope`` (Type 1, 1C, 2, 2C)."""
    types = iod_named(scope[0]).types
    return {e.keyword: types[(scope[1], e.keyword)] for e in level
            if types.get((scope[1], e.keyword), AttributeType.T3) is not AttributeType.T3}


@pytest.mark.parametrize("syntax", SYNTAXES, ids=["explicit", "implicit"])
def test_required_by_the_iod_they_are_dummied_or_emptied(syntax: str) -> None:
    ds = _inventory(syntax)
    data = to_bytes(ds)
    out, written = both_paths(data, privacy_first())
    study = out.InventoriedStudiesSequence[0]
    assert study.ItemInventoryDateTime not in ("", None)  # Type 1: the dummy
    assert study.StudyUpdateDateTime == ""  # Type 2: empty
    for value in ("20240109", "20240110", "101517", "103022"):
        assert value.encode() not in written, value
    # The output is as valid as the input: what the IOD requires is there, with a value
    # where it needs one.
    for scope, source, kept in ((("inventory", ""), ds, out),
                                (("inventory", "InventoriedStudiesSequence"),
                                 ds.InventoriedStudiesSequence[0], study)):
        required = _required(scope, source)
        assert required, scope
        for keyword, kind in required.items():
            assert keyword in kept, (scope, keyword)
            if kind in (AttributeType.T1, AttributeType.T1C):
                assert kept[keyword].value not in ("", None), (scope, keyword)
    gate = Gate()
    assert gate.check("inv.dcm", written, gate.source_facts(data, len(data)),
                      {0x00080018: out.SOPInstanceUID}).ok
    # Modified dates: both shifted like the study's date beside them, still valid.
    shifted, _ = both_paths(data, _with_options(MODIFIED))
    item = shifted.InventoriedStudiesSequence[0]
    days = (date(int(item.StudyDate[:4]), int(item.StudyDate[4:6]), int(item.StudyDate[6:]))
            - date(2024, 1, 5)).days
    assert days != 0
    assert item.StudyUpdateDateTime == _shift("20240109101517", days)
    assert item.ItemInventoryDateTime == _shift("20240110103022", days)


def test_minimal_keep_list_treats_them_as_identifying() -> None:
    """MINIMAL_KEEP_LIST keeps what the IOD requires, but a required date the standard
    would remove loses its value as the table's dates do (the dummy, or empty)."""
    plan = Plan(DeidConfig(profile=ProfileType.MINIMAL_KEEP_LIST))
    item = ("inventory", "InventoriedStudiesSequence")
    assert plan.act(_tag("ItemInventoryDateTime"), "DT", Mode.NORMAL, item) is Act.DUMMY
    assert plan.act(_tag("StudyUpdateDateTime"), "DT", Mode.NORMAL, item) is Act.EMPTY
    assert plan.act(_tag("StudyUpdateDateTime"), "DT", Mode.NORMAL, ("ct-image", "")) \
        is Act.DELETE
